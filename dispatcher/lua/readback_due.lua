-- Start the read-backs that are due (dispatcher.schedule.Pump.tick, step 7): for each
-- server with verifying calls whose earliest read-back time has come, when no read-back
-- of it runs (or its lease ran out), its own pace allows one (v2: the call list's own
-- budget; v1: a slot of the shared rate limiter, ``rate_interval``) and the breaker
-- admits it (as the probe, when the breaker may test). Where the CAD has no read-back,
-- the verifying calls go back in line instead, a possible duplicate each.
-- KEYS[1]  key prefix (see _calls.lua; walks the servers with verifying calls)
-- ARGV[1]  now          ARGV[2]  read-back lease, s (a worker that dies frees it then)
-- ARGV[3]  shared rate interval, s (v1; 0 : the read-back has its own budget)
-- ARGV[4]  longest slot wait, s    ARGV[5]  the breaker probe's lease, s
-- Returns a flat list, 3 per read-back started: server, gen, start time.
--!include _calls.lua
--!include _circuit.lua
--!include _ratelimit.lua
--!include _verify.lua
local now, lease, rate_interval = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local max_wait, probe_lease = tonumber(ARGV[4]), tonumber(ARGV[5])
local out = {}
local servers = redis.call('SMEMBERS', k('readback:servers'))
if #servers == 0 then return out end
if readback_unavailable(now) then
  for _, server in ipairs(servers) do
    verifying_fallback(server, now, "the CAD's list cannot be read; sent again")
  end
  return out
end
for _, server in ipairs(servers) do
  local s = redis.call('HMGET', rb(server), 'state', 'lease_until', 'next_at', 'due_at')
  local running = s[1] == 'running' and num(s[2], 0) > now
  local due = num(s[4], 0)
  if due == 0 or redis.call('ZCARD', k('verifying:' .. server)) == 0 then
    verifying_rest(server)  -- its calls were delivered meanwhile (a late outcome wins)
  elseif not running and due <= now and num(s[3], 0) <= now
      and not (rate_interval > 0 and rate_paused(now)) then
    local probe = 'readback:' .. server
    local admitted = circuit_admit(probe, now, probe_lease)
    local start = now
    if admitted and rate_interval > 0 then
      start = reserve_slot(now, rate_interval)
      if start - now > max_wait then
        -- Give the slot back: the calls in line have it sooner.
        redis.call('HSET', k('rate'), 'tat', start)
        release_probe(probe)
        admitted = false
      end
    end
    if admitted then
      local gen = redis.call('HINCRBY', rb(server), 'gen', 1)
      redis.call('HSET', rb(server), 'state', 'running', 'lease_until', start + lease,
        'started_at', now)
      table.insert(out, server)
      table.insert(out, gen)
      table.insert(out, tostring(start))
    end
  end
end
return out
