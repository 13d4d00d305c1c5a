// swift-tools-version:6.1
import PackageDescription

/// The numeric engine is always compiled with optimisation, even in debug
/// builds, so that tests over real kernels run at a useful speed while the
/// rest of the package keeps fast debug compiles.
let engineSettings: [SwiftSetting] = [
    .unsafeFlags(["-Ounchecked"]),
]

let package = Package(
    name: "Pando",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "pando", targets: ["pando"]),
        .executable(name: "pando-coordinator", targets: ["pando-coordinator"]),
        .executable(name: "pando-client", targets: ["pando-client"]),
        .library(name: "PandoEngine", targets: ["PandoEngine"]),
        .library(name: "PandoText", targets: ["PandoText"]),
        .library(name: "PandoData", targets: ["PandoData"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.3"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "4.5.2"),
        .package(url: "https://github.com/apple/swift-certificates.git", from: "1.21.1"),
        .package(url: "https://github.com/apple/swift-asn1.git", from: "1.7.4"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.10.0"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.2.2"),
        // The coordinator's status page, JSON API and /metrics (PandoStatus). No traits:
        // swift-configuration support is not used.
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1", traits: []),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
    ],
    targets: [
        // glibc's malloc.h (mallopt), for the transport's allocator policy.
        .systemLibrary(name: "CMalloc", path: "Sources/CMalloc"),
        // Int8 inference GEMM (AVX-512 VNNI with a portable fallback), the element-wise kernels,
        // and the OpenBLAS loader (dlopen after choosing its kernel set). Always optimised.
        .target(name: "CPandoKernels", cSettings: [.unsafeFlags(["-O3"])], linkerSettings: [.linkedLibrary("dl")]),
        // Tensors, checkpoints, BERT forward/backward, optimisers. No networking.
        .target(
            name: "PandoEngine",
            dependencies: ["CPandoKernels"],
            swiftSettings: engineSettings
        ),
        // WordPiece tokenisation identical to Hugging Face's BertTokenizer.
        .target(name: "PandoText", swiftSettings: engineSettings),
        // Data sets (CSV, JSON Lines), label maps, splits and task metrics.
        .target(name: "PandoData"),
        // Local training workflow, evaluation and benchmarks on top of the engine.
        // Privacy/: the RDP accountant and DP-SGD's cryptographic noise and sampling (swift-crypto).
        .target(name: "PandoTraining", dependencies: ["PandoEngine", "PandoText", "PandoData",
                                                     .product(name: "Crypto", package: "swift-crypto")]),
        // Network-free federation: updates, validation, streaming aggregation, strategies,
        // the secure-aggregation protocol's cryptography and
        // state machines (SecureAggregation/, swift-crypto), and the federation ledger.
        .target(name: "PandoFederation", dependencies: ["PandoEngine", "PandoText", "PandoData", "PandoTraining", "PandoLedger",
                                                       .product(name: "Crypto", package: "swift-crypto")]),
        // Wire protocol: frames, messages, handshake, object transfer. NIOCore + SHA-256 only.
        .target(
            name: "PandoWire",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Crypto", package: "swift-crypto"),
            ]
        ),
        // District CA, school/coordinator certificates, X.509 CRL (no networking).
        .target(
            name: "PandoCertificates",
            dependencies: [
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
            ]
        ),
        // Mutual-TLS transport: coordinator server, school client, heartbeats, transfers.
        .target(
            name: "PandoTransport",
            dependencies: [
                "PandoWire", "PandoCertificates", "CMalloc",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // Content-addressed global versions, coordinator state in SQLite (GRDB),
        // the signed hash-chained audit log, the school's own log, and verification.
        .target(
            name: "PandoLedger",
            dependencies: [
                "PandoEngine",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Crypto", package: "swift-crypto"),
            ]
        ),
        // The coordinator and school services: configuration files, the round driver
        // over the transport, the school agent. What the executables run.
        .target(
            name: "PandoServices",
            dependencies: [
                "PandoEngine", "PandoText", "PandoData", "PandoTraining", "PandoFederation", "PandoLedger",
                "PandoTransport", "PandoWire", "PandoCertificates",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Yams", package: "Yams"),
            ]
        ),
        // The coordinator's status listener: HTML status page with a server-side SVG plot,
        // JSON API (deploy/status-api.openapi.yaml) and Prometheus /metrics, on Hummingbird.
        // Reads the coordinator's monitor and ledger; never networking of its own otherwise.
        .target(
            name: "PandoStatus",
            dependencies: [
                "PandoServices", "PandoLedger", "PandoFederation",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "HummingbirdTLS", package: "hummingbird"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // `pando serve`: HTTP inference (Hugging Face Inference API shape) for a checkpoint folder or
        // a version of a coordinator's store, with dynamic batching, limits and back-pressure.
        .target(
            name: "PandoServe",
            dependencies: [
                "PandoEngine", "PandoData", "PandoTraining", "PandoLedger", "PandoServices", "PandoStatus",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "HummingbirdTLS", package: "hummingbird"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .executableTarget(
            name: "pando",
            dependencies: [
                "PandoEngine", "PandoText", "PandoData", "PandoTraining", "PandoFederation",
                "PandoCertificates", "PandoLedger", "PandoServices", "PandoTransport", "PandoStatus", "PandoServe",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .executableTarget(
            name: "pando-coordinator",
            dependencies: [
                "PandoServices", "PandoStatus",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .executableTarget(
            name: "pando-client",
            dependencies: [
                "PandoServices",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // Fixture paths and helpers shared by the test targets.
        .target(name: "PandoTestSupport",
                dependencies: ["PandoEngine", "PandoData", .product(name: "Logging", package: "swift-log"),
                               .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio"),
                               .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                               .product(name: "NIOTLS", package: "swift-nio"), .product(name: "NIOSSL", package: "swift-nio-ssl")],
                path: "Tests/PandoTestSupport"),
        .testTarget(name: "PandoEngineTests", dependencies: ["PandoEngine", "CPandoKernels", "PandoTestSupport"]),
        .testTarget(name: "PandoTextTests", dependencies: ["PandoText"]),
        .testTarget(name: "PandoDataTests", dependencies: ["PandoData"]),
        .testTarget(name: "PandoTrainingTests", dependencies: ["PandoTraining", "PandoTestSupport"]),
        .testTarget(name: "PandoFederationTests", dependencies: ["PandoFederation", "PandoEngine", "PandoText", "PandoData", "PandoTraining", "PandoLedger", "PandoTestSupport",
                                                                .product(name: "Crypto", package: "swift-crypto")]),
        .testTarget(name: "PandoLedgerTests", dependencies: ["PandoLedger", "PandoEngine", "PandoTestSupport",
                                                            .product(name: "GRDB", package: "GRDB.swift")]),
        .testTarget(name: "PandoWireTests", dependencies: ["PandoWire", .product(name: "NIOCore", package: "swift-nio")]),
        .testTarget(
            name: "PandoServicesTests",
            dependencies: [
                "PandoServices", "PandoTransport", "PandoFederation", "PandoLedger", "PandoEngine", "PandoData",
                "PandoTraining", "PandoCertificates", "PandoWire", "PandoTestSupport",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
            ]
        ),
        .testTarget(
            name: "PandoStatusTests",
            dependencies: [
                "PandoStatus", "PandoServices", "PandoLedger", "PandoFederation", "PandoData", "PandoCertificates", "PandoTestSupport",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Yams", package: "Yams"),
            ]
        ),
        .testTarget(
            name: "PandoServeTests",
            dependencies: [
                "PandoServe", "PandoTraining", "PandoEngine", "PandoData", "PandoLedger", "PandoCertificates", "PandoTestSupport",
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .testTarget(
            name: "PandoTransportTests",
            dependencies: [
                "PandoTransport", "PandoWire", "PandoCertificates", "PandoTestSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
    ]
)
