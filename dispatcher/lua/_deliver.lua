-- A call the CAD has: delivered (dispatcher.lifecycle and dispatcher.readback). Needs
-- _calls.lua. {p}:cad:{cad id} maps the CAD's id back to ours, for status and removal.
-- A call taken back while it was being sent is removed from the CAD now. A door waiting
-- on the call hears of it (_notify.lua, which this includes).
--!include _notify.lua
local function mark_delivered(id, now, cad_id, status, response, ttl)
  unplace(id)
  redis.call('HSET', ck(id), 'state', 'delivered', 'cad_call_id', cad_id, 'status_code', status,
    'response', response, 'delivered_at', now, 'updated_at', now, 'last_error', '', 'reason', '')
  redis.call('HINCRBY', k('counters'), 'delivered', 1)
  if ttl > 0 then keep_for(id, ttl) end
  if cad_id ~= '' then
    if ttl > 0 then redis.call('SET', k('cad:' .. cad_id), id, 'EX', ttl)
    else redis.call('SET', k('cad:' .. cad_id), id) end
  end
  notify_outcome(id)
  if remove_requested(id) then start_removal(id, now) end
end
