-- The API key must stay on the server. `set sonoran_apiKey ...` keeps it there; `setr`
-- replicates it to every connected client, where any player (or cheat menu) can read it
-- with GetConvar. The server has no native that tells how a convar was set, so
-- client.lua asks the first clients that join: if one can read the key it says so (a
-- boolean, never the value) and this logs one warning, once per resource start. A
-- client could send the event falsely; the cost is a warning, which is all it does.

local RESOURCE = GetCurrentResourceName()
local EVENT = 'sonoran_dispatcher:apiKeyReplicated'
local warned = false

RegisterNetEvent(EVENT)
AddEventHandler(EVENT, function(readable)
    if readable ~= true or warned then
        return
    end
    warned = true
    print(('[%s] ^1WARNING: player %s can read sonoran_apiKey: the key was set with `setr`, which sends it to every client. Anyone on the server can copy it and act as your community in the CAD. Set it with `set` in server.cfg (not `setr` or `sets`), restart the server, and regenerate the key in the CAD (it has been exposed).^7')
        :format(RESOURCE, tostring(source)))
end)
