// Queue a 911 call by pushing it onto the Redis inbox. Node 18+, no packages: one LPUSH
// needs only a few lines of the Redis protocol (with the `redis` npm package it is
// `await client.lPush(key, json)`, see docs/game-servers.md).
//
//   REDIS_URL=redis://localhost:6379/0 node enqueue_inbox.mjs
//
// The `bridge` process moves it into the queue. An entry that is not a valid call is
// kept as a dead letter `invalid` (see `dispatcher dlq list`), never dropped.
import { randomUUID } from 'node:crypto';
import net from 'node:net';
import tls from 'node:tls';

const redisUrl = new URL(process.env.REDIS_URL ?? 'redis://localhost:6379/0');
const inbox = process.env.DISPATCHER_INBOX_KEY ?? 'dispatcher:inbox';
const entry = { // the flat form; a call object as the seed sends it in `data` works too
  caller: 'Jane Doe',
  location: 'Route 68 / Joshua Rd',
  description: 'Two-car collision',
  postal: '350',
  plate: '8ABC123',
  idempotencyKey: `example-${randomUUID()}`,
};

// A command is an array of bulk strings; lengths count bytes, not characters.
const command = (...args) =>
  `*${args.length}\r\n` + args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('');

const commands = [];
if (redisUrl.password) {
  const user = decodeURIComponent(redisUrl.username);
  const password = decodeURIComponent(redisUrl.password);
  commands.push(user ? command('AUTH', user, password) : command('AUTH', password));
}
const db = redisUrl.pathname.slice(1);
if (db && db !== '0') commands.push(command('SELECT', db));
commands.push(command('LPUSH', inbox, JSON.stringify(entry)));

const secure = redisUrl.protocol === 'rediss:';
const socket = (secure ? tls : net).connect({
  host: redisUrl.hostname,
  port: Number(redisUrl.port || 6379),
  servername: secure ? redisUrl.hostname : undefined,
});
socket.setTimeout(5000, () => socket.destroy(new Error('Redis did not answer within 5 s')));
socket.on('error', (error) => {
  console.error(`Redis unavailable: ${error.message}`);
  process.exit(1);
});
socket.write(commands.join(''));

// Each of these commands answers with one line: +OK, :<integer> or -<error>.
let received = '';
socket.on('data', (chunk) => {
  received += chunk.toString('utf8');
  const replies = received.split('\r\n').slice(0, -1);
  if (replies.length < commands.length) return;
  socket.end();
  const failed = replies.find((reply) => reply.startsWith('-'));
  if (failed) {
    console.error(`Redis refused: ${failed.slice(1)}`);
    process.exit(1);
  }
  const waiting = replies[replies.length - 1].slice(1);
  console.log(`pushed ${entry.idempotencyKey} (${waiting} entries waiting for the bridge)`);
});
