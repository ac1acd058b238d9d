// swift-tools-version:6.0
import PackageDescription

// Baton's version for this build (scripts/package sets it from the git tag/commit); without it
// the base version in Sources/CBatonVersion/version.c.
let batonVersionSettings: [CSetting] = Context.environment["BATON_VERSION"].map { [.define("BATON_VERSION", to: "\"\($0)\"")] } ?? []

let package = Package(
    name: "baton",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "NATS", targets: ["NATS"]),
        .library(name: "BatonCore", targets: ["BatonCore"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.81.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.30.0"),
        .package(url: "https://github.com/apple/swift-crypto.git", "3.12.0"..<"5.0.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.0"),
        .package(url: "https://github.com/apple/swift-atomics.git", from: "1.2.0"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "5.0.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.5.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.6.0"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.24.0"),
        .package(url: "https://github.com/swiftlang/swift-subprocess.git", from: "1.0.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.0.0"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.0.0"),
        .package(url: "https://github.com/hummingbird-project/swift-websocket.git", from: "1.6.2"),
        .package(url: "https://github.com/apple/swift-http-types.git", from: "1.0.0"),
    ],
    targets: [
        .target(name: "Timestamps"),
        .testTarget(name: "TimestampsTests", dependencies: ["Timestamps"]),
        .target(
            name: "NATS",
            dependencies: [
                "Timestamps",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Atomics", package: "swift-atomics"),
            ]
        ),
        .target(
            name: "BatonCore",
            dependencies: ["CBatonVersion", "FenceKeeper", .product(name: "Yams", package: "Yams")]
        ),
        .target(
            name: "CBatonVersion",
            cSettings: batonVersionSettings
        ),
        .testTarget(
            name: "BatonCoreTests",
            dependencies: ["BatonCore"]
        ),
        .target(
            name: "BatonEvents",
            dependencies: ["BatonCore", "NATS", .product(name: "Logging", package: "swift-log"), .product(name: "NIOCore", package: "swift-nio")]
        ),
        .testTarget(
            name: "BatonEventsTests",
            dependencies: ["BatonEvents", "BatonCore", "NATS", "NATSTestSupport", "TestSupport", .product(name: "Logging", package: "swift-log")]
        ),
        // The control protocol's two ends (service, client) and the lease bucket's record and
        // store: everything batonctl needs, without the backends' C libraries.
        .target(
            name: "Control",
            dependencies: [
                "BatonCore",
                "NATS",
                "Timestamps",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),
        // The executors of a node's apps: process and systemd backends, their fence keepers,
        // health probes.
        .target(
            name: "Backends",
            dependencies: [
                "BatonCore",
                "FenceKeeper",
                "CBatonProcess",
                "Systemd",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Subprocess", package: "swift-subprocess"),
                .product(name: "Metrics", package: "swift-metrics"),
            ]
        ),
        .target(
            name: "Permissions",
            dependencies: [
                "BatonCore", "NATS", "Control", "ReplicationCatalog",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
            ]
        ),
        .target(
            name: "Supervisor",
            dependencies: [
                "BatonCore",
                "BatonEvents",
                "NATS",
                "Timestamps",
                "Control",
                "Backends",
                "Netlink",
                "FenceKeeper",
                "Systemd",
                "Replication",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Metrics", package: "swift-metrics"),
            ]
        ),
        .testTarget(
            name: "SupervisorTests",
            dependencies: [
                "Supervisor", "Control", "Backends", "Permissions", "BatonCore", "NATS", "NATSTestSupport", "TestSupport", "FaultProxy", "FenceKeeper", "Netlink", "Systemd", "SystemdTestSupport", "Replication", "NetnsLab",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
            ]
        ),
        .executableTarget(
            name: "batond",
            dependencies: [
                "BatonCore",
                "BatonEvents",
                "NATS",
                "Control",
                "Backends",
                "Supervisor",
                "Permissions",
                "Systemd",
                "BatonHTTP",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]
        ),
        .target(
            name: "BatonHTTP",
            dependencies: [
                "BatonCore",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "HummingbirdTLS", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        .testTarget(
            name: "BatonHTTPTests",
            dependencies: ["BatonHTTP", "BatonCore", .product(name: "Logging", package: "swift-log")]
        ),
        .testTarget(
            name: "IntegrationTests",
            dependencies: [
                "NATSTestSupport", "SystemdTestSupport", "TestSupport", "NATS", "Replication", "NetnsLab", "FaultProxy", "BatonCore", "BatonEvents",
                .product(name: "WSClient", package: "swift-websocket"),
                .product(name: "WSCore", package: "swift-websocket"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .target(
            name: "NetnsLab",
            dependencies: ["TestSupport"],
            path: "Tests/NetnsLab"
        ),
        // The one bounded wait (`eventually`) every test suite uses.
        .target(
            name: "TestSupport",
            path: "Tests/TestSupport"
        ),
        .testTarget(
            name: "TestSupportTests",
            dependencies: ["TestSupport"]
        ),
        .target(
            name: "NATSTestSupport",
            dependencies: ["NATS"],
            path: "Tests/NATSTestSupport"
        ),
        .testTarget(
            name: "NATSTests",
            dependencies: [
                "NATS",
                "NATSTestSupport",
                "TestSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Crypto", package: "swift-crypto"),
            ]
        ),
        .executableTarget(
            name: "NATSBenchmark",
            dependencies: [
                "NATS", "BenchmarkSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Benchmarks/NATSBenchmark"
        ),
        .executableTarget(
            name: "FailoverBenchmark",
            dependencies: [
                "NATS", "Supervisor", "Control", "Backends", "BatonCore", "BenchmarkSupport",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Benchmarks/FailoverBenchmark"
        ),
        .executableTarget(
            name: "ReplicationBenchmark",
            dependencies: [
                "Replication", "NATS", "CSQLite", "CBatonProcess", "BenchmarkSupport",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Benchmarks/ReplicationBenchmark"
        ),
        .executableTarget(
            name: "EventsBenchmark",
            dependencies: [
                "BatonEvents", "BatonCore", "NATS", "BenchmarkSupport",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Benchmarks/EventsBenchmark"
        ),
        // What the benchmarks share: percentiles, load average, duration and list arguments.
        .target(
            name: "BenchmarkSupport",
            dependencies: [.product(name: "ArgumentParser", package: "swift-argument-parser")],
            path: "Benchmarks/BenchmarkSupport"
        ),
        .executableTarget(
            name: "ScaleBenchmark",
            dependencies: [
                "NATS", "Control", "BatonCore", "BenchmarkSupport",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Benchmarks/ScaleBenchmark"
        ),
        .executableTarget(
            name: "VIPFailoverBenchmark",
            dependencies: ["NetnsLab", "TestSupport", "BenchmarkSupport", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            path: "Benchmarks/VIPFailoverBenchmark"
        ),
        .executableTarget(
            name: "baton-chaos",
            dependencies: [
                "NATS",
                "FaultProxy",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ]
        ),
        .target(
            name: "FaultProxy",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ]
        ),
        .target(
            name: "CBatonProcess",
            path: "Sources/CBatonProcess"
        ),
        .target(
            name: "FenceKeeper"
        ),
        .executableTarget(
            name: "baton-fence-keeper",
            dependencies: ["FenceKeeper", "CBatonProcess", "Netlink", "Systemd", .product(name: "Logging", package: "swift-log")]
        ),
        .testTarget(
            name: "FenceKeeperTests",
            dependencies: ["FenceKeeper"]
        ),
        .systemLibrary(
            name: "CSQLite",
            pkgConfig: "sqlite3",
            providers: [.apt(["libsqlite3-dev"])]
        ),
        // What replication keeps in NATS and how it is named and read: stream, subject and
        // bucket names, the record and chunk formats, the history bucket's records, snapshot
        // metadata. No SQLite: batonctl and Permissions use it without linking libsqlite3.
        .target(
            name: "ReplicationCatalog",
            dependencies: [
                "NATS",
                .product(name: "NIOCore", package: "swift-nio"),
            ]
        ),
        .target(
            name: "Replication",
            dependencies: [
                "CSQLite",
                "NATS",
                "ReplicationCatalog",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ]
        ),
        .testTarget(
            name: "ReplicationTests",
            dependencies: [
                "Replication", "CSQLite", "NATS", "NATSTestSupport", "TestSupport",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
            ]
        ),
        .executableTarget(
            name: "batonctl",
            dependencies: [
                "Control", "Permissions", "BatonCore", "BatonEvents", "NATS", "ReplicationCatalog", "Timestamps",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .systemLibrary(
            name: "CMnl",
            path: "Sources/CMnl",
            pkgConfig: "libmnl",
            providers: [.apt(["libmnl-dev"])]
        ),
        .target(
            name: "CBatonNetlink",
            path: "Sources/CBatonNetlink"
        ),
        .target(
            name: "Netlink",
            dependencies: [
                "CMnl",
                "CBatonNetlink",
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .testTarget(
            name: "NetlinkTests",
            dependencies: [
                "Netlink",
                "NATSTestSupport",
                "NetnsLab",
                "TestSupport",
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .systemLibrary(
            name: "CSystemd",
            path: "Sources/CSystemd",
            pkgConfig: "libsystemd",
            providers: [.apt(["libsystemd-dev"])]
        ),
        .target(
            name: "Systemd",
            dependencies: [
                "CSystemd",
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .target(
            name: "SystemdTestSupport",
            dependencies: [
                "Systemd", "NATSTestSupport",
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Tests/SystemdTestSupport"
        ),
        .testTarget(
            name: "SystemdTests",
            dependencies: [
                "Systemd", "SystemdTestSupport", "NATSTestSupport", "TestSupport",
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
    ],
    swiftLanguageModes: [.v6]
)
