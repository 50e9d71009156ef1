-- Record a new call (idempotently) and, when it may go at once, push its first Celery
-- message in the same step (dispatcher.lifecycle.Lifecycle.enqueue).
-- KEYS[1]  key prefix (see _calls.lua)
-- KEYS[2]  inbox processing list the entry is taken from ('' : not from the inbox)
-- KEYS[3]  Celery queue list the first message goes to
-- KEYS[4]  batch marker ('' : a lone call): once one call of a batch (enqueue_many) is
--          refused at the cap, this key says so and the batch's later calls are refused
--          too, even if the backlog shrank meanwhile, so a batch never skips a call
-- ARGV[1]  call id            ARGV[2]  call JSON (as sent to the CAD)
-- ARGV[3]  enqueued at (now)  ARGV[4]  idempotency key ('' : none)
-- ARGV[5]  idempotency TTL, s ARGV[6]  source (api, inbox, http...)
-- ARGV[7]  rate interval, s   ARGV[8]  lookahead, s   ARGV[9]  window
-- ARGV[10] the inbox entry to remove from KEYS[2]
-- ARGV[11] the first Celery message (gen 1) for KEYS[3]
-- ARGV[12] backlog cap (0 : none)
-- ARGV[13] notify ('1' : a door waits for the outcome (Prefer: wait); the record gets
--          notify='1', and so does an existing one this call duplicates; '' or absent: no)
-- ARGV[14] fields of the call we do not know (counted in counters' unknown_fields)
-- ARGV[15] '1' : a civil call (isEmergency false): it waits behind every emergency call
--          in line (the record gets civil='1'; see hold in _calls.lua)
-- A new call gets its ticket (dispatcher.tickets): the next number of {p}:tickets, which
-- starts above 9e15; {p}:ticket:{n} names the call (without expiry until the record has
-- one: keep_for in _calls.lua). A duplicate answers the ticket of the call it repeats.
-- Returns {id, 'pushed', ticket}, {id, 'held', ticket}, {id, 'duplicate', ticket},
-- {'', 'gone'} or {'', 'full', waiting}.
--!include _calls.lua
--!include _circuit.lua
--!include _ratelimit.lua
local id, call, at, idem = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local now = tonumber(at)
local idem_ttl, source = ARGV[5], ARGV[6]
local interval, ahead, window = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local inbox, entry, queue, message = KEYS[2], ARGV[10], KEYS[3], ARGV[11]
local cap = tonumber(ARGV[12]) or 0
local batch = KEYS[4] or ''
local notify = ARGV[13] or ''
local unknown = tonumber(ARGV[14] or '0') or 0
local civil = ARGV[15] or ''

local existing = nil
if idem ~= '' then existing = redis.call('GET', k('idem:' .. idem)) end
-- The backlog cap counts every call not yet delivered or dead. A call already
-- recorded (idempotency key, or its id) is not new work: it is answered.
local known = redis.call('EXISTS', ck(id)) == 1  -- nothing below creates it before it is read
if cap > 0 and not existing and not known then
  local waiting = redis.call('ZCARD', k('pending'))
  if waiting >= cap or (batch ~= '' and redis.call('EXISTS', batch) == 1) then
    if batch ~= '' then redis.call('SET', batch, '1', 'PX', 60000) end
    return {'', 'full', tostring(waiting)}
  end
end
-- From the inbox: the entry leaves its processing list in the same step that records it.
if inbox ~= '' then
  if redis.call('LREM', inbox, 1, entry) == 0 then return {'', 'gone'} end
end
-- A retry that waits (Prefer: wait) on a call already recorded is told its outcome too.
local function duplicate(of)
  if notify == '1' and redis.call('EXISTS', ck(of)) == 1 then
    redis.call('HSET', ck(of), 'notify', '1')
  end
  return {of, 'duplicate', redis.call('HGET', ck(of), 'ticket') or ''}
end
if existing then return duplicate(existing) end
if idem ~= '' then redis.call('SET', k('idem:' .. idem), id, 'EX', idem_ttl) end
if known then return duplicate(id) end
local ticket = new_ticket(id)
redis.call('HSET', ck(id), 'id', id, 'ticket', ticket, 'call', call, 'enqueued_at', at,
  'age_from', at, 'attempts', 0, 'failures', 0, 'gen', 0, 'source', source,
  'idempotency_key', idem, 'replays', 0, 'updated_at', now)
if notify == '1' then redis.call('HSET', ck(id), 'notify', '1') end
if civil == '1' then redis.call('HSET', ck(id), 'civil', '1') end
redis.call('ZADD', k('pending'), now, id)
redis.call('HINCRBY', k('counters'), 'enqueued', 1)
if unknown > 0 then redis.call('HINCRBY', k('counters'), 'unknown_fields', unknown) end
if redis.call('ZCARD', k('held')) == 0 and capacity(now, interval, ahead, window) > 0 then
  local slot = reserve_slot(now, interval)
  redis.call('HSET', ck(id), 'state', 'queued', 'gen', 1, 'slot', slot)
  redis.call('ZADD', k('queued'), now, id)
  -- The Celery message goes out in the same atomic step as the record.
  redis.call('LPUSH', queue, message)
  return {id, 'pushed', ticket}
end
hold(id, now, now)
return {id, 'held', ticket}
