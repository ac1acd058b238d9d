import NATS
import NIOCore
let client = try NATSClient(options: NATSClientOptions(servers: ["nats://127.0.0.1:15001"]))
let events = client.events()
Task { for await e in events { print("event", e) } }
try await client.connect()
print(client.knownServers, client.serverInfo!.connectURLs as Any)
try await Task.sleep(for: .seconds(3))
print(client.knownServers, client.serverInfo!.connectURLs as Any)
await client.close()
