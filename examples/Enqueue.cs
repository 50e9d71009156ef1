// Queue a 911 call from .NET: over HTTP (HttpClient) or onto the Redis inbox
// (StackExchange.Redis). Not run by the test suite (no .NET SDK in CI); it uses only
// System.Net.Http, System.Text.Json and StackExchange.Redis' documented API.
//
//   dotnet new console -n Enqueue && cd Enqueue && dotnet add package StackExchange.Redis
//   (replace Program.cs with this file)
//   DISPATCHER_URL=http://127.0.0.1:8000 SONORAN_COMMUNITY_ID=... SONORAN_API_KEY=... dotnet run -- http
//   REDIS_HOST=localhost:6379 dotnet run -- inbox
using System;
using System.Net.Http;
using System.Text;
using System.Text.Json;
using System.Threading.Tasks;
using StackExchange.Redis;

public static class Enqueue
{
    static string Env(string name, string fallback = null) =>
        Environment.GetEnvironmentVariable(name) ?? fallback
        ?? throw new InvalidOperationException($"{name} is not set");

    // POST the CAD's own body to the dispatcher; returns the call's ticket.
    public static async Task<string> ViaHttpAsync(HttpClient http)
    {
        var call = new
        {
            serverId = Env("SONORAN_SERVER_ID", "1"),
            isEmergency = true,
            caller = "Jane Doe",
            location = "Route 68 / Joshua Rd",
            description = "Two-car collision",
            metaData = new { postal = "350", plate = "8ABC123" },
            // Made once per call, not per attempt: a retry after a lost answer gets the
            // first attempt's id back instead of creating a second call.
            idempotencyKey = $"example-{Guid.NewGuid()}",
        };
        var body = JsonSerializer.Serialize(new
        {
            id = Env("SONORAN_COMMUNITY_ID"),
            key = Env("SONORAN_API_KEY"),
            type = "CALL_911",
            data = new[] { call },
        });
        var url = Env("DISPATCHER_URL", "http://127.0.0.1:8000").TrimEnd('/') + "/emergency/call_911";
        for (var attempt = 0; ; attempt++)
        {
            if (attempt > 0)
                await Task.Delay(TimeSpan.FromSeconds(Math.Min(Math.Pow(2, attempt), 30)));
            try
            {
                using var content = new StringContent(body, Encoding.UTF8, "application/json");
                using var response = await http.PostAsync(url, content);
                var text = await response.Content.ReadAsStringAsync();
                if (response.IsSuccessStatusCode)
                    return text.Substring(text.LastIndexOf("ID: ", StringComparison.Ordinal) + 4);
                // 400: wrong id, key or call; sending it again cannot help. 503: try again.
                if ((int)response.StatusCode != 503 || attempt == 5)
                    throw new InvalidOperationException($"refused: {(int)response.StatusCode} {text}");
            }
            catch (Exception e) when ((e is HttpRequestException or TaskCanceledException) && attempt < 5)
            {
                // no answer in time: the dispatcher is restarting or unreachable
            }
        }
    }

    // LPUSH the flat form onto the inbox; the bridge process moves it into the queue.
    public static long ViaInbox(IDatabase redis)
    {
        var entry = JsonSerializer.Serialize(new
        {
            caller = "Jane Doe",
            location = "Route 68 / Joshua Rd",
            description = "Two-car collision",
            postal = "350",
            plate = "8ABC123",
            idempotencyKey = $"example-{Guid.NewGuid()}",
        });
        return redis.ListLeftPush(Env("DISPATCHER_INBOX_KEY", "dispatcher:inbox"), entry);
    }

    public static async Task Main(string[] args)
    {
        if (args.Length > 0 && args[0] == "inbox")
        {
            using var mux = ConnectionMultiplexer.Connect(Env("REDIS_HOST", "localhost:6379"));
            var waiting = ViaInbox(mux.GetDatabase());
            Console.WriteLine($"pushed ({waiting} entries waiting for the bridge)");
        }
        else
        {
            using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(10) };
            Console.WriteLine(await ViaHttpAsync(http));
        }
    }
}
