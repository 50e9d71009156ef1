// Queue a 911 call through the dispatcher's HTTP door. Node 18+, no packages.
//
//   DISPATCHER_URL=http://127.0.0.1:8000 SONORAN_COMMUNITY_ID=... SONORAN_API_KEY=... \
//     node enqueue_http.mjs
//
// The body is the CAD's own (the seed's); the answer is `EMERGENCY CALL QUEUED ID: <ticket>`.
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';

const url = (process.env.DISPATCHER_URL ?? 'http://127.0.0.1:8000').replace(/\/+$/, '');
const call = {
  serverId: process.env.SONORAN_SERVER_ID ?? '1',
  isEmergency: true,
  caller: 'Jane Doe',
  location: 'Route 68 / Joshua Rd',
  description: 'Two-car collision',
  metaData: { postal: '350', plate: '8ABC123' },
  // Made once per call, not per attempt: a retry after a lost answer gets the
  // first attempt's id back instead of creating a second call.
  idempotencyKey: `example-${randomUUID()}`,
};
const body = JSON.stringify({
  id: process.env.SONORAN_COMMUNITY_ID,
  key: process.env.SONORAN_API_KEY,
  type: 'CALL_911',
  data: [call],
});

let reason = '';
for (let attempt = 0; attempt < 6; attempt++) {
  if (attempt) await sleep(Math.min(2 ** attempt, 30) * 1000);
  let response;
  try {
    response = await fetch(`${url}/emergency/call_911`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body,
      signal: AbortSignal.timeout(10_000),
    });
  } catch (error) { // no answer: the dispatcher is restarting or unreachable
    reason = String(error.cause ?? error);
    continue;
  }
  const text = await response.text();
  if (response.ok) {
    console.log(text.split('ID: ').pop()); // the call's ticket
    process.exit(0);
  }
  if (response.status !== 503) { // 400: wrong id, key or call; sending it again cannot help
    console.error(`refused: ${response.status} ${text}`);
    process.exit(1);
  }
  reason = text;
}
console.error(`dispatcher unavailable: ${reason}`);
process.exit(1);
