// A stand-in for FXServer's JavaScript runtime, just big enough to run a server script
// such as integrations/fivem/examples/server.js with plain Node.
//
//   node fivem_js_shim.cjs SCRIPT
//
// Environment:
//   FIVEM_CONVAR_<name>   what GetConvar(<name>) returns (as in fivem_harness.lua)
//   SHIM_COMMAND          JSON [source, command, [args...]]: run this registered command
//                         and wait for it (an async handler is awaited)
//   SHIM_DISPATCHER       "lua": the sonoran_dispatcher resource is started, and its
//                         exports are the real Lua resource, run by fivem_harness.lua
//                         under lua5.4 (HARNESS_LUA, HARNESS_RESOURCE); otherwise its
//                         state is "missing"
// Output: the script's console lines; the bridged harness's lines prefixed "LUA ".
// Exit 0 once the command finished; 3 when a script error or unknown command happened.
'use strict';

const fs = require('node:fs');
const path = require('node:path');
const vm = require('node:vm');
const { execFile } = require('node:child_process');

const script = process.argv[2];
const commands = new Map();
const exported = new Map();
const bridged = process.env.SHIM_DISPATCHER === 'lua';

// exports.sonoran_dispatcher.<name>(...args, cb...): the Lua resource, run once per call
// by the harness; its callback's arguments come back as they were (RESULT line).
function luaExport(name) {
  if (name !== 'call911') throw new Error(`the shim bridges call911 only, not ${name}`);
  return (caller, location, description, postal, plate, cb) => {
    const env = { ...process.env, HARNESS_CALLS: JSON.stringify([[caller, location, description, postal ?? null, plate ?? null]]) };
    const harness = path.join(__dirname, 'fivem_harness.lua');
    execFile(process.env.HARNESS_LUA || 'lua5.4', [harness, process.env.HARNESS_RESOURCE], { env },
      (error, stdout) => {
        for (const line of stdout.split('\n').filter(Boolean)) console.log(`LUA ${line}`);
        const result = stdout.split('\n').find((line) => line.startsWith('RESULT '));
        if (error || !result) {
          console.error(`SHIM the Lua resource failed: ${error}`);
          process.exit(3);
        }
        const { args } = JSON.parse(result.slice('RESULT '.length));
        cb(...args.map((value) => (value === '<nil>' ? undefined : value)));
      });
  };
}

const exportsProxy = new Proxy(function exportsFn(name, fn) { exported.set(name, fn); }, {
  get(_target, resource) {
    if (resource === 'sonoran_dispatcher' && bridged) {
      return new Proxy({}, { get: (_t, name) => luaExport(name) });
    }
    return new Proxy({}, {
      get: (_t, name) => { throw new Error(`No such export ${String(name)} in resource ${String(resource)}`); },
    });
  },
});

const sandbox = {
  console, fetch, setTimeout, clearTimeout, AbortSignal, URL, Buffer,
  exports: exportsProxy,
  GetConvar: (name, fallback) => process.env[`FIVEM_CONVAR_${name}`] ?? fallback,
  GetCurrentResourceName: () => 'my_resource',
  GetResourceState: (name) => (name === 'sonoran_dispatcher' && bridged ? 'started' : 'missing'),
  GetPlayerName: (source) => (source === '7' ? 'Jane Player' : null),
  RegisterCommand: (name, handler) => { commands.set(name, handler); },
};

async function main() {
  vm.runInNewContext(fs.readFileSync(script, 'utf8'), sandbox, { filename: script });
  const [source, name, args] = JSON.parse(process.env.SHIM_COMMAND || 'null') ?? [];
  if (name === undefined) return;
  const handler = commands.get(name);
  if (!handler) throw new Error(`no command ${name}`);
  await handler(source, args, `/${name} ${args.join(' ')}`);
}

main().then(() => process.exit(0), (error) => {
  console.error(`SCRIPT ERROR: ${error && error.stack}`);
  process.exit(3);
});
