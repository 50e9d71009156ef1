-- One CAD request's duration into the latency histogram
-- (dispatcher.telemetry.Telemetry.observe_latency; the outcome scripts do the same).
-- KEYS[1]  the histogram hash ({p}:latency)
-- ARGV[1]  outcome (delivered, retryable, permanent)
-- ARGV[2]  bucket (upper bound)               ARGV[3]  duration, s
-- Returns 1.
--!include _observe.lua
local key, outcome, bucket, seconds = KEYS[1], ARGV[1], ARGV[2], ARGV[3]
observe(key, outcome, bucket, seconds)
return 1
