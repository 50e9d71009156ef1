-- Settle a server's verifying calls with what its read-back found
-- (dispatcher.readback.Verifier.run): a call found in the CAD's list is delivered, with
-- the CAD's id, and never sent again; a call not found that was verifying before the
-- read-back began goes back in line, in its place, to be sent again. Calls that became
-- verifying after it began wait for the next one. The CAD answered: the breaker closes.
-- A call taken back meanwhile is removed from the CAD (found) or cancelled (not found).
-- KEYS[1]  key prefix (see _calls.lua; walks the server's verifying calls)
-- ARGV[1]  server       ARGV[2]  gen of this read-back   ARGV[3]  now
-- ARGV[4]  when the read-back began   ARGV[5]  the next one no sooner than, time
-- ARGV[6]  record TTL of a delivered call, s
-- ARGV[7..] pairs: call id, the CAD's id (the calls found)
-- Returns {found, sent again} or {'stale'} (the read-back's lease ran out meanwhile).
--!include _calls.lua
--!include _circuit.lua
--!include _verify.lua
--!include _deliver.lua
local server, gen, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
local began, next_at, ttl = tonumber(ARGV[4]), ARGV[5], tonumber(ARGV[6])
if redis.call('HGET', rb(server), 'gen') ~= gen then return {'stale'} end
local found, again = 0, 0
local seen = {}
local pairs_found = {unpack(ARGV, 7)}
for i = 1, #pairs_found, 2 do
  local id, cad_id = pairs_found[i], pairs_found[i + 1]
  seen[id] = true
  if redis.call('HGET', ck(id), 'state') == 'verifying' then
    mark_delivered(id, now, cad_id, '', "found in the CAD's list after an unknown outcome", ttl)
    redis.call('HINCRBY', k('counters'), 'verified_found', 1)
    found = found + 1
  end
end
for _, id in ipairs(redis.call('ZRANGE', k('verifying:' .. server), 0, -1)) do
  local r = redis.call('HMGET', ck(id), 'state', 'verify_at', 'enqueued_at')
  if not seen[id] and r[1] == 'verifying' and num(r[2], 0) <= began then
    leave_verifying(id, server)
    redis.call('HINCRBY', k('counters'), 'verified_missing', 1)
    if remove_requested(id) then
      cancel(id, now, "taken back; not in the CAD's list after an unknown outcome")
    else
      redis.call('HSET', ck(id), 'last_error', "not in the CAD's list after an unknown "
        .. 'outcome; sent again')
      hold(id, tonumber(r[3]), now)
      again = again + 1
    end
  elseif r[1] ~= 'verifying' then
    leave_verifying(id, server)
  end
end
redis.call('HSET', rb(server), 'state', 'idle', 'lease_until', 0, 'next_at', next_at,
  'failures', 0, 'last_at', now, 'last_error', '')
redis.call('HSET', k('readback'), 'last_ok_at', now)
redis.call('HINCRBY', k('counters'), 'readbacks', 1)
release_probe('readback:' .. server)
circuit_success(now)
verifying_rest(server)
return {tostring(found), tostring(again)}
