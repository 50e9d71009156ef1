-- Shared by every script that changes a call's place (dispatcher.lifecycle and friends).
-- KEYS[1]  the key prefix (``dispatcher``): these scripts walk call records by id, so
--          they build every key from it (k(name), ck(id)). Redis Cluster is unsupported.
-- Numbers that go back to Python are returned as strings: Redis truncates Lua numbers.
local P = KEYS[1]
local function k(name) return P .. ':' .. name end
local function ck(id) return P .. ':call:' .. id end
local function num(v, d) if v then return tonumber(v) or d end return d end

-- The call's ticket (dispatcher.tickets): the next number above 9e15, and its index.
-- Formatted with %.0f: Lua would write a number this large as 9e+15.
local function new_ticket(id)
  redis.call('SET', k('tickets'), '9000000000000000', 'NX')
  local ticket = string.format('%.0f', redis.call('INCR', k('tickets')))
  redis.call('SET', k('ticket:' .. ticket), id)
  return ticket
end

-- The call's record (and its ticket's index) is kept ttl more seconds (0 : for good).
local function keep_for(id, ttl)
  local ticket = redis.call('HGET', ck(id), 'ticket')
  if ttl > 0 then
    redis.call('EXPIRE', ck(id), ttl)
    if ticket then redis.call('EXPIRE', k('ticket:' .. ticket), ttl) end
  else
    redis.call('PERSIST', ck(id))
    if ticket then redis.call('PERSIST', k('ticket:' .. ticket)) end
  end
end

-- The call's record and its ticket's index are deleted.
local function forget(id)
  local ticket = redis.call('HGET', ck(id), 'ticket')
  if ticket then redis.call('DEL', k('ticket:' .. ticket)) end
  redis.call('DEL', ck(id))
end

-- In line (``held``) emergency calls come first, oldest first, then civil ones (311-style,
-- the record's civil='1'), oldest first: a civil call's place is its time plus 1e10 s.
local CIVIL_BEHIND = 1e10
local function hold(id, enq, now)
  redis.call('HSET', ck(id), 'state', 'held', 'updated_at', now)
  local place = enq
  if redis.call('HGET', ck(id), 'civil') == '1' then place = enq + CIVIL_BEHIND end
  redis.call('ZADD', k('held'), place, id)
end

local function unplace(id)
  for _, z in ipairs({'held', 'queued', 'scheduled', 'inflight', 'pending', 'dead'}) do
    redis.call('ZREM', k(z), id)
  end
  if redis.call('ZREM', k('verifying'), id) == 1 then
    local server = redis.call('HGET', ck(id), 'verify_server') or ''
    redis.call('ZREM', k('verifying:' .. server), id)
  end
end

local function bury(id, now, reason, status, response, err)
  unplace(id)
  redis.call('HSET', ck(id), 'state', 'dead', 'reason', reason, 'status_code', status,
    'response', response, 'last_error', err, 'dead_at', now, 'updated_at', now)
  redis.call('ZADD', k('dead'), now, id)
  redis.call('HINCRBY', k('counters'), 'dead:' .. reason, 1)
end

-- Taken back before the CAD had it (dispatcher.takeback): never sent. The record is kept
-- for `dispatcher status` as long as a delivered one (its record_ttl, set when taken back).
local function cancel(id, now, why)
  unplace(id)
  redis.call('HSET', ck(id), 'state', 'cancelled', 'cancelled_at', now, 'updated_at', now,
    'op', '', 'remove_requested', '', 'last_error', why)
  redis.call('HINCRBY', k('counters'), 'cancelled', 1)
  local ttl = tonumber(redis.call('HGET', ck(id), 'record_ttl') or '0') or 0
  if ttl > 0 then keep_for(id, ttl) end
end

-- Was this call asked to be taken back while its send was under way?
local function remove_requested(id)
  return redis.call('HGET', ck(id), 'remove_requested') == '1'
end

-- A delivered call to be removed from the CAD: it goes through the line like a call
-- (op 'remove': the worker sends REMOVE_911 / DELETE), at its old place, so soon.
local function start_removal(id, now)
  local enq = tonumber(redis.call('HGET', ck(id), 'enqueued_at'))
  keep_for(id, 0)
  redis.call('HSET', ck(id), 'op', 'remove', 'remove_requested', '', 'failures', 0,
    'removal_at', now)
  redis.call('HINCRBY', k('counters'), 'removals', 1)
  hold(id, enq, now)
end
