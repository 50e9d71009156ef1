// A 911 call from a FiveM server script in JavaScript, through sonoran-dispatcher.
//
// In a resource of your own, with this fxmanifest.lua:
//   fx_version 'cerulean'
//   game 'gta5'
//   server_script 'server.js'
//   node_version '22'   -- for fetch; FXServer's default Node 16 has none
//
// With the sonoran_dispatcher resource started, the call goes through its export,
// call911, with the official resource's callback cb(text, ok), and gets its retry queue
// (kept in KVP over restarts). Without it, the call goes straight to the dispatcher's
// HTTP door with fetch, sent again with the same Idempotency-Key while the dispatcher
// does not answer or answers 503/429, so a lost answer never makes a second call.
// Reads the same convars as the resource (set sonoran_apiKey with `set`, never `setr`).
//
// Use: /report911 <what happened> in the console or the chat, or from another script
//   const { ok, text } = await exports.my_resource.report911(caller, location, description, postal, plate);
// text is "EMERGENCY CALL ADDED ID: <CAD id>" (the CAD took it within 3 s),
// "EMERGENCY CALL QUEUED ID: <ticket>" (safe with the dispatcher, delivered later) or why
// it was refused (ok false).

const DISPATCHER = 'sonoran_dispatcher';
const WAIT_S = 3;       // Prefer: wait=3: the CAD's own answer when it is quick
const ATTEMPTS = 6;     // 1 + retries after 2, 4, 8, 16, 30 s

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function viaExport(caller, location, description, postal, plate) {
  return new Promise((resolve) => {
    exports[DISPATCHER].call911(caller, location, description, postal, plate,
      (text, ok) => resolve({ ok, text }));
  });
}

async function viaDoor(caller, location, description, postal, plate) {
  const url = GetConvar('sonoran_dispatcher_url', 'http://127.0.0.1:8000').replace(/\/+$/, '');
  const metaData = {};
  if (postal != null && postal !== '') metaData.postal = String(postal);
  if (plate != null && plate !== '') metaData.plate = String(plate);
  const call = {
    serverId: GetConvar('sonoran_serverId', '1'), isEmergency: true, caller, location, description,
  };
  if (Object.keys(metaData).length > 0) call.metaData = metaData;
  const body = JSON.stringify({
    id: GetConvar('sonoran_communityID', ''),
    key: GetConvar('sonoran_apiKey', ''),
    type: 'CALL_911',
    data: [call],
  });
  // Made once per call, not per attempt: a retry after a lost answer is the same call.
  const key = `fivem-js-${GetCurrentResourceName()}-${Date.now()}-${Math.random().toString(16).slice(2)}`;
  const headers = { 'Content-Type': 'application/json', 'Idempotency-Key': key, Prefer: `wait=${WAIT_S}` };

  let text = '';
  for (let attempt = 0; attempt < ATTEMPTS; attempt++) {
    if (attempt > 0) await sleep(Math.min(2 ** attempt, 30) * 1000);
    let response;
    try {
      response = await fetch(`${url}/emergency/call_911`, {
        method: 'POST', headers, body, signal: AbortSignal.timeout((WAIT_S + 5) * 1000),
      });
    } catch (error) { // no answer: the dispatcher is restarting or unreachable
      text = `DISPATCHER UNREACHABLE: ${error.cause?.code ?? error.name}`;
      continue;
    }
    text = await response.text();
    if (response.ok) return { ok: true, text };
    // 400: wrong id, key or call; sending it again cannot help.
    if (response.status !== 503 && response.status !== 429) return { ok: false, text };
  }
  return { ok: false, text };
}

async function report911(caller, location, description, postal, plate) {
  if (GetResourceState(DISPATCHER) === 'started') {
    return viaExport(caller, location, description, postal, plate);
  }
  return viaDoor(caller, location, description, postal, plate);
}

exports('report911', report911);

RegisterCommand('report911', async (source, args) => {
  if (args.length === 0) return;
  const caller = source > 0 ? GetPlayerName(String(source)) : 'Console';
  const { ok, text } = await report911(caller, 'Unknown', args.join(' '));
  console.log(`911 call ${ok ? 'sent' : 'refused'}: ${text}`);
}, false);
