// swift-tools-version:6.0
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
        .library(name: "PandoEngine", targets: ["PandoEngine"]),
        .library(name: "PandoText", targets: ["PandoText"]),
        .library(name: "PandoData", targets: ["PandoData"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
    ],
    targets: [
        // OpenBLAS's CBLAS interface (libopenblas-dev).
        .systemLibrary(
            name: "COpenBLAS",
            path: "Sources/COpenBLAS",
            providers: [.apt(["libopenblas-dev"])]
        ),
        // Tensors, checkpoints, BERT forward/backward, optimisers. No networking.
        .target(
            name: "PandoEngine",
            dependencies: ["COpenBLAS"],
            swiftSettings: engineSettings
        ),
        // WordPiece tokenisation identical to Hugging Face's BertTokenizer.
        .target(name: "PandoText", swiftSettings: engineSettings),
        // Data sets (CSV, JSON Lines), label maps, splits and task metrics.
        .target(name: "PandoData"),
        // Local training workflow, evaluation and benchmarks on top of the engine.
        .target(name: "PandoTraining", dependencies: ["PandoEngine", "PandoText", "PandoData"]),
        // Network-free federation: updates, validation, streaming aggregation, strategies
        // (those files import PandoEngine only), and the in-process simulation (Simulation/).
        .target(name: "PandoFederation", dependencies: ["PandoEngine", "PandoText", "PandoData", "PandoTraining"]),
        .executableTarget(
            name: "pando",
            dependencies: [
                "PandoEngine", "PandoText", "PandoData", "PandoTraining", "PandoFederation",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .testTarget(name: "PandoEngineTests", dependencies: ["PandoEngine"]),
        .testTarget(name: "PandoTextTests", dependencies: ["PandoText"]),
        .testTarget(name: "PandoDataTests", dependencies: ["PandoData"]),
        .testTarget(name: "PandoTrainingTests", dependencies: ["PandoTraining"]),
        .testTarget(name: "PandoFederationTests", dependencies: ["PandoFederation", "PandoEngine", "PandoData", "PandoTraining"]),
    ]
)
