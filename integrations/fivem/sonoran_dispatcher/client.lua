-- client.lua: runs in every player's game, for one check only. A client can read a
-- convar only when the server replicated it (`setr`); then sonoran_apiKey, the CAD's
-- key, is in every player's hands. This tells the server so: it sends `true`, never
-- the value, and the server (keycheck.lua) logs one loud warning.

CreateThread(function()
    -- Replicated convars arrive with the connection; the player is active after that.
    while not NetworkIsPlayerActive(PlayerId()) do
        Wait(500)
    end
    if GetConvar('sonoran_apiKey', '') ~= '' then
        TriggerServerEvent('sonoran_dispatcher:apiKeyReplicated', true)
    end
end)
