// A 911 call from a FiveM server script in C# (CitizenFX.Core.Server), through
// sonoran-dispatcher. NOT COMPILED OR RUN by the test suite: there is no .NET compiler
// on the CI machine (no dotnet, mcs or csc); server.js beside it does the same and is run.
//
// Build it as a FiveM server assembly (a class library referencing CitizenFX.Core.Server,
// e.g. the CitizenFX.Core.Server NuGet package, target net452), then in your resource's
// fxmanifest.lua:  server_script 'Sonoran911.net.dll'
//
// With the sonoran_dispatcher resource started, the call goes through its export, call911,
// with the official resource's callback (text, ok), and gets its retry queue (kept in KVP
// over restarts). Without it, the call goes straight to the dispatcher's HTTP door, sent
// again with the same Idempotency-Key while the dispatcher does not answer or answers
// 503/429. Reads the same convars as the resource (set sonoran_apiKey with `set`, never
// `setr`). /report911 <what happened> makes a call as the player.
using System;
using System.Collections.Generic;
using System.Net.Http;
using System.Text;
using System.Threading.Tasks;
using CitizenFX.Core;
using CitizenFX.Core.Native;

public class Sonoran911 : BaseScript
{
    const string Dispatcher = "sonoran_dispatcher";
    const int WaitSeconds = 3;   // Prefer: wait=3: the CAD's own answer when it is quick
    const int Attempts = 6;      // 1 + retries after 2, 4, 8, 16, 30 s
    static readonly HttpClient Http = new HttpClient { Timeout = TimeSpan.FromSeconds(WaitSeconds + 5) };

    public Sonoran911()
    {
        API.RegisterCommand("report911", new Action<int, List<object>, string>(async (source, args, raw) =>
        {
            if (args.Count == 0) return;
            var caller = source > 0 ? API.GetPlayerName(source.ToString()) : "Console";
            var result = await Call911(caller, "Unknown", string.Join(" ", args), null, null);
            Debug.WriteLine($"911 call {(result.Ok ? "sent" : "refused")}: {result.Text}");
        }), false);
    }

    public class Result
    {
        public bool Ok;       // false only when refused for good (or no answer after every attempt)
        public string Text;   // "EMERGENCY CALL ADDED ID: <CAD id>", "EMERGENCY CALL QUEUED ID: <ticket>"
                              // (safe with the dispatcher, delivered later), or why it was refused
        public Result(bool ok, string text) { Ok = ok; Text = text; }
    }

    public Task<Result> Call911(string caller, string location, string description, string postal,
                                string plate)
    {
        if (API.GetResourceState(Dispatcher) == "started")
        {
            var done = new TaskCompletionSource<Result>();
            Exports[Dispatcher].call911(caller, location, description, postal, plate,
                new Action<string, bool>((text, ok) => done.TrySetResult(new Result(ok, text))));
            return done.Task;
        }
        return ViaDoor(caller, location, description, postal, plate);
    }

    static async Task<Result> ViaDoor(string caller, string location, string description,
                                              string postal, string plate)
    {
        var url = API.GetConvar("sonoran_dispatcher_url", "http://127.0.0.1:8000").TrimEnd('/');
        var meta = new StringBuilder();
        if (!string.IsNullOrEmpty(postal)) meta.Append($"\"postal\":{Json(postal)}");
        if (!string.IsNullOrEmpty(plate)) meta.Append(meta.Length > 0 ? "," : "").Append($"\"plate\":{Json(plate)}");
        var call = $"{{\"serverId\":{Json(API.GetConvar("sonoran_serverId", "1"))},\"isEmergency\":true," +
                   $"\"caller\":{Json(caller)},\"location\":{Json(location)},\"description\":{Json(description)}" +
                   (meta.Length > 0 ? $",\"metaData\":{{{meta}}}}}" : "}");
        var body = $"{{\"id\":{Json(API.GetConvar("sonoran_communityID", ""))}," +
                   $"\"key\":{Json(API.GetConvar("sonoran_apiKey", ""))},\"type\":\"CALL_911\",\"data\":[{call}]}}";
        // Made once per call, not per attempt: a retry after a lost answer is the same call.
        var key = $"fivem-cs-{API.GetCurrentResourceName()}-{Guid.NewGuid():N}";

        var text = "";
        for (var attempt = 0; attempt < Attempts; attempt++)
        {
            if (attempt > 0) await Delay((int)Math.Min(Math.Pow(2, attempt), 30) * 1000);
            using (var request = new HttpRequestMessage(HttpMethod.Post, url + "/emergency/call_911"))
            {
                request.Content = new StringContent(body, Encoding.UTF8, "application/json");
                request.Headers.Add("Idempotency-Key", key);
                request.Headers.Add("Prefer", $"wait={WaitSeconds}");
                HttpResponseMessage response;
                try
                {
                    response = await Http.SendAsync(request);
                }
                catch (Exception e) when (e is HttpRequestException || e is TaskCanceledException)
                {
                    text = "DISPATCHER UNREACHABLE: " + e.GetType().Name;  // restarting or down
                    continue;
                }
                text = await response.Content.ReadAsStringAsync();
                // Back on the game's thread before any native is called after this.
                await Delay(0);
                if (response.IsSuccessStatusCode) return new Result(true, text);
                var status = (int)response.StatusCode;
                // 400: wrong id, key or call; sending it again cannot help.
                if (status != 503 && status != 429) return new Result(false, text);
            }
        }
        return new Result(false, text);
    }

    // A JSON string literal (no JSON library needed on Mono's server runtime).
    static string Json(string value)
    {
        var sb = new StringBuilder("\"");
        foreach (var c in value ?? "")
        {
            switch (c)
            {
                case '"': sb.Append("\\\""); break;
                case '\\': sb.Append("\\\\"); break;
                default:
                    if (c < 0x20) sb.Append($"\\u{(int)c:x4}"); else sb.Append(c);
                    break;
            }
        }
        return sb.Append('"').ToString();
    }
}
