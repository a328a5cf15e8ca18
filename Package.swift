// swift-tools-version: 6.0
import PackageDescription

let package = Package(
    name: "kho",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "kho", targets: ["kho"]),
        .library(name: "KhoCore", targets: ["KhoCore"]),
        .library(name: "KhoSupport", targets: ["KhoSupport"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "5.0.1"),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.0.0"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.100.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.30.0"),
    ],
    targets: [
        .systemLibrary(
            name: "CZstd",
            pkgConfig: "libzstd",
            providers: [.apt(["libzstd-dev"])]
        ),
        .systemLibrary(
            name: "COpenSSL",
            pkgConfig: "libcrypto",
            providers: [.apt(["libssl-dev"])]
        ),
        .systemLibrary(
            name: "CPostgres",
            pkgConfig: "libpq",
            providers: [.apt(["libpq-dev"])]
        ),
        .systemLibrary(
            name: "CMariaDB",
            pkgConfig: "libmariadb",
            providers: [.apt(["libmariadb-dev"])]
        ),
        .target(
            name: "KhoSupport"
        ),
        .target(
            name: "KhoCore",
            dependencies: [
                "KhoSupport",
                "CZstd",
                "COpenSSL",
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .target(
            name: "KhoStorage",
            dependencies: [
                "KhoSupport",
                "KhoCore",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ]
        ),
        .target(
            name: "KhoSources",
            dependencies: ["KhoSupport", "KhoCore", "CPostgres", "CMariaDB", .product(name: "GRDB", package: "GRDB.swift")]
        ),
        .target(
            name: "KhoCatalog",
            dependencies: [
                "KhoSupport",
                "KhoCore",
                "KhoSources",
                .product(name: "GRDB", package: "GRDB.swift"),
            ]
        ),
        .target(
            name: "KhoVerify",
            dependencies: ["KhoSupport", "KhoCore", "KhoStorage", "KhoSources", "KhoCatalog"]
        ),
        .target(
            name: "KhoPolicy",
            dependencies: [
                "KhoSupport",
                "KhoCore",
                "KhoStorage",
                "KhoSources",
                "KhoCatalog",
                "KhoVerify",
                .product(name: "Yams", package: "Yams"),
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .target(name: "KhoReports", dependencies: ["KhoSupport", "KhoCore", "KhoSources", "KhoCatalog", "KhoPolicy"]),
        .executableTarget(
            name: "kho",
            dependencies: [
                "KhoSupport",
                "KhoVerify",
                "KhoReports",
                "KhoCore",
                "KhoStorage",
                "KhoSources",
                "KhoPolicy",
                "KhoCatalog",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .executableTarget(
            name: "kho-bench",
            dependencies: ["KhoSupport", "KhoCore"],
            path: "Sources/kho-bench"
        ),
        // Helpers every test target shares: scratch database servers, moto, proxies, temporary folders.
        .target(
            name: "KhoTestSupport",
            dependencies: ["KhoSupport", "KhoCore", "KhoStorage"],
            path: "Tests/KhoTestSupport"
        ),
        .testTarget(name: "KhoCoreTests", dependencies: ["KhoSupport", "KhoCore", "KhoTestSupport"]),
        .testTarget(name: "KhoSupportTests", dependencies: ["KhoSupport"]),
        .testTarget(name: "KhoStorageTests", dependencies: ["KhoSupport", "KhoCore", "KhoStorage", "KhoTestSupport"]),
        // Depends on the `kho` executable so that `swift test` never runs against a stale binary.
        .testTarget(name: "KhoIntegrationTests", dependencies: ["kho", "KhoSupport", "KhoCore", "KhoStorage", "KhoTestSupport"]),
        .testTarget(name: "KhoReportsTests", dependencies: ["KhoReports", "KhoPolicy", "KhoCatalog", "KhoVerify", "KhoSupport", "KhoCore", "KhoTestSupport"]),
        .testTarget(name: "KhoPolicyTests", dependencies: ["KhoPolicy", "KhoCatalog", "KhoSources", "KhoSupport", "KhoCore", "KhoTestSupport"]),
        .testTarget(name: "KhoCatalogTests", dependencies: ["KhoCatalog", "KhoSupport", "KhoCore", .product(name: "GRDB", package: "GRDB.swift")]),
        .testTarget(name: "KhoVerifyTests", dependencies: ["KhoVerify", "KhoCatalog", "KhoSupport", "KhoCore"]),
        .testTarget(name: "KhoSourcesTests", dependencies: ["KhoSources", "KhoSupport", "KhoCore", "KhoTestSupport", .product(name: "GRDB", package: "GRDB.swift")]),
    ],
    swiftLanguageModes: [.v6]
)
