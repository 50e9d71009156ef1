fx_version 'cerulean'
game 'gta5'
lua54 'yes'

name 'sonoran_dispatcher'
description 'Sends in-game 911 calls to sonoran-dispatcher (a durable queue in front of Sonoran CAD) and retries them while the dispatcher is unreachable'
version '0.1.0'

-- config.lua first: server.lua reads the convars through the helpers it defines.
server_scripts {
    'config.lua',
    'server.lua',
    'follow.lua',
    'takeover.lua',
    'keycheck.lua',
}

-- One check, no secrets: tells the server if a client can read sonoran_apiKey (`setr`).
client_script 'client.lua'
