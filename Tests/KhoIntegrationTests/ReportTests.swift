import Foundation
import KhoTestSupport
import Glibc
import KhoCore
import KhoSupport
import Testing

// `kho report` against a catalog made by the real policy engine: `kho run` under a fake clock
// (KHO_TEST_NOW), one night after another through November 2026, with a source that fails on two
// nights, a drill that misses its RTO, and a source that is never drilled. The HTML report is
// rendered in a real headless Chromium (Debian's `chromium`): no console message or script error,
// every dataset in the DOM, and a screenshot that is not blank — decoded here (PNG, inflate) and
// counted pixel by pixel against a blank page rendered the same way. `kho report --check` passes
// on the untouched file and exits 12 on an edited one.

private let reportZone = TimeZone(identifier: "Asia/Ho_Chi_Minh")!

/// 2026-11-DD at HH:MM in Asia/Ho_Chi_Minh, as KHO_TEST_NOW takes it.
private func novemberTime(_ day: Int, _ hour: Int, _ minute: Int = 0) -> String {
    String(format: "2026-11-%02dT%02d:%02d:00+07:00", day, hour, minute)
}

/// A sandbox with a repository (password in a file), policies, a state folder and the data.
private final class ReportBench: @unchecked Sendable {
    let box: Sandbox
    var policies: String { box.path("policies") }
    var state: String { box.path("state") }
    var passwordFile: String { box.path("repository.pass") }
    var failFlag: String { box.path("van-ban-offline") }

    init() throws {
        box = try Sandbox("report")
        for folder in [policies, state, box.path("tmp"), box.path("scan/2026"), box.path("tep")] {
            try makeDirectories(folder)
            chmod(folder, 0o755)
        }
        try writeFile(passwordFile, Array("report repository password\n".utf8), mode: 0o600)
        for i in 1...6 { try writeFile(box.path("scan/2026/Hồ sơ số \(i).pdf"), randomBytes(20_000 + i * 100)) }
        try writeFile(box.path("tep/Quyết định 15-QĐ-UBND.txt"), Array("Quyết định về việc phê duyệt kế hoạch sao lưu dữ liệu.\n".utf8))
        try writeFile(box.path("van-ban.sql"), Array("INSERT INTO van_ban VALUES (1, 'Công văn số 1/UBND');\n".utf8))
        let made = try run(["init"])
        try #require(made.exitCode == 0, "\(made)")
        let head = { (name: String, agency: String, level: Int, schedule: String) in
            """
            name: \(name)
            agency: \(agency)
            system: Hệ thống \(name)
            security-level: \(level)
            schedule: "\(schedule)"
            repository:
              path: \(self.box.repo)
              password-file: \(self.passwordFile)

            """
        }
        try writeFile(policies + "/ho-so.yaml", Array((head("ho-so", "Trung tâm Phục vụ hành chính công tỉnh Quảng Ngãi", 2, "15 0 * * *") + """
            sources:
              - name: ho-so-scan
                kind: files
                paths: [\(box.path("scan"))]
            objectives:
              rpo: 24h
              rto: 1h
            drills:
              every: 7d
            """).utf8))
        // The dump command fails (fail closed: no snapshot) while the flag file exists; its RTO is
        // a millisecond, so its drill misses it.
        try writeFile(policies + "/van-ban.yaml", Array((head("van-ban", "Văn phòng UBND tỉnh Quảng Ngãi", 3, "0 23 * * *") + """
            sources:
              - name: van-ban-dump
                kind: command
                command: "if [ -e \(failFlag) ]; then echo 'mất kết nối tới máy chủ văn bản' >&2; exit 3; fi; cat \(box.path("van-ban.sql"))"
            objectives:
              rpo: 24h
              rto: 0.001s
            drills:
              every: 10d
            """).utf8))
        try writeFile(policies + "/tu-phap.yaml", Array((head("tu-phap", "Sở Tư pháp tỉnh Quảng Ngãi", 3, "30 1 * * *") + """
            sources:
              - name: ho-tich-tep
                kind: files
                paths: [\(box.path("tep"))]
            objectives:
              rpo: 24h
              rto: 4h
            """).utf8))
    }

    func environment(_ extra: [String: String?]) -> [String: String?] {
        var env: [String: String?] = ["KHO_PASSWORD": nil, "KHO_PASSWORD_FILE": passwordFile, "KHO_STATE_DIR": state,
                                      "KHO_POLICIES": policies, "TMPDIR": box.path("tmp")]
        for (key, value) in extra { env[key] = value }
        return env
    }

    func run(_ arguments: [String], env extra: [String: String?] = [:]) throws -> ProcessResult {
        try box.kho(arguments, env: environment(extra))
    }

    /// Every night of November at 23:30: the backups due that day, and the drills due.
    func simulateNovember(failing: Set<Int>) throws {
        for day in 1...30 {
            if failing.contains(day) {
                try writeFile(failFlag, [0x31])
            } else {
                unlink(failFlag)
            }
            let result = try run(["run", "--json"], env: ["KHO_TEST_NOW": novemberTime(day, 23, 30)])
            try #require(result.exitCode == 0 || result.exitCode == 1, "night \(day): \(result)")
            // The only failures are the ones the month is made of: the dump on its failing
            // nights, and the drills of the source whose RTO is a millisecond.
            let jobs = try #require(try result.json() as? [[String: Any]], "night \(day): \(result)")
            for job in jobs where job["outcome"] as? String != "success" {
                let source = job["source"] as? String, kind = job["kind"] as? String, error = job["error"] as? String ?? ""
                let expected = source == "van-ban-dump" && ((kind == "backup" && failing.contains(day)) || (kind == "drill" && error.contains("RTO")))
                #expect(expected, "night \(day): unexpected \(job)")
            }
            #expect(jobs.contains { $0["kind"] as? String == "backup" && $0["source"] as? String == "van-ban-dump" && $0["outcome"] as? String == (failing.contains(day) ? "failure" : "success") },
                    "night \(day): \(result)")
        }
        unlink(failFlag)
    }
}

// MARK: Chromium

private enum Chromium {
    static let path: String? = ["/usr/bin/chromium", "/usr/bin/chromium-browser"].first { access($0, X_OK) == 0 }

    /// Runs headless Chromium on a file with the given extra flags; returns its result.
    static func run(_ flags: [String], page: String, box: Sandbox) throws -> ProcessResult {
        let profile = box.path("chrome-profile")
        try? makeDirectories(profile)
        var env = ProcessInfo.processInfo.environment
        env["HOME"] = box.path("chrome-home")
        let child = try Child.spawn(path!, ["--headless", "--no-sandbox", "--disable-gpu", "--user-data-dir=\(profile)",
                                            "--no-first-run", "--hide-scrollbars"] + flags + ["file://" + page],
                                    environment: env, scratch: box.dir)
        return child.wait(timeout: 120)
    }

    /// Console messages and uncaught errors Chromium logged for the page.
    static func consoleLines(_ stderr: String) -> [String] {
        stderr.split(separator: "\n").map(String.init).filter { $0.contains(":CONSOLE") || $0.contains("Uncaught") }
    }
}

// MARK: a minimal PNG reader (zlib inflate, scanline filters) for the screenshot

private struct PNGImage {
    var width: Int
    var height: Int
    /// RGBA, 8 bits per channel.
    var pixels: [UInt8]

    struct Failure: Error, CustomStringConvertible { var description: String }

    init(_ bytes: [UInt8]) throws {
        guard bytes.count > 8, Array(bytes[0..<8]) == [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a] else { throw Failure(description: "not a PNG") }
        func be32(_ i: Int) -> Int { Int(bytes[i]) << 24 | Int(bytes[i + 1]) << 16 | Int(bytes[i + 2]) << 8 | Int(bytes[i + 3]) }
        var offset = 8
        var idat: [UInt8] = []
        var w = 0, h = 0, depth = 0, colorType = 0, interlace = 0
        while offset + 8 <= bytes.count {
            let length = be32(offset)
            let type = String(decoding: bytes[(offset + 4)..<(offset + 8)], as: UTF8.self)
            let body = offset + 8
            guard body + length + 4 <= bytes.count else { throw Failure(description: "truncated chunk \(type)") }
            switch type {
            case "IHDR":
                w = be32(body); h = be32(body + 4); depth = Int(bytes[body + 8]); colorType = Int(bytes[body + 9]); interlace = Int(bytes[body + 12])
            case "IDAT":
                idat += bytes[body..<(body + length)]
            default: break
            }
            offset = body + length + 4
            if type == "IEND" { break }
        }
        guard depth == 8, colorType == 2 || colorType == 6, interlace == 0 else {
            throw Failure(description: "unsupported PNG: depth \(depth), color type \(colorType), interlace \(interlace)")
        }
        let channels = colorType == 6 ? 4 : 3
        let raw = try Inflate.zlib(idat)
        let stride = w * channels
        guard raw.count >= h * (stride + 1) else { throw Failure(description: "image data too short: \(raw.count) bytes") }
        var previous = [UInt8](repeating: 0, count: stride)
        var rgba = [UInt8](repeating: 255, count: w * h * 4)
        for y in 0..<h {
            let filter = raw[y * (stride + 1)]
            var line = Array(raw[(y * (stride + 1) + 1)..<((y + 1) * (stride + 1))])
            for x in 0..<stride {
                let a = x >= channels ? Int(line[x - channels]) : 0
                let b = Int(previous[x])
                let c = x >= channels ? Int(previous[x - channels]) : 0
                let predictor: Int
                switch filter {
                case 0: predictor = 0
                case 1: predictor = a
                case 2: predictor = b
                case 3: predictor = (a + b) / 2
                case 4:
                    let p = a + b - c, pa = abs(p - a), pb = abs(p - b), pc = abs(p - c)
                    predictor = pa <= pb && pa <= pc ? a : (pb <= pc ? b : c)
                default: throw Failure(description: "bad filter \(filter) on row \(y)")
                }
                line[x] = UInt8((Int(line[x]) + predictor) & 0xff)
            }
            for x in 0..<w {
                for ch in 0..<channels { rgba[(y * w + x) * 4 + ch] = line[x * channels + ch] }
            }
            previous = line
        }
        width = w
        height = h
        pixels = rgba
    }
}

/// RFC 1950/1951 decompression: stored, fixed and dynamic Huffman blocks.
private enum Inflate {
    struct Failure: Error, CustomStringConvertible { var description: String }

    struct Huffman {
        var counts = [Int](repeating: 0, count: 16)
        var symbols: [Int]
        init(_ lengths: [Int]) {
            symbols = [Int](repeating: 0, count: lengths.count)
            for l in lengths { counts[l] += 1 }
            counts[0] = 0
            var offsets = [Int](repeating: 0, count: 16)
            for l in 1..<15 { offsets[l + 1] = offsets[l] + counts[l] }
            for (symbol, l) in lengths.enumerated() where l != 0 {
                symbols[offsets[l]] = symbol
                offsets[l] += 1
            }
        }
    }

    struct Reader {
        let data: [UInt8]
        var position: Int
        var buffer = 0
        var available = 0

        mutating func bits(_ n: Int) throws -> Int {
            while available < n {
                guard position < data.count else { throw Failure(description: "compressed data ends early") }
                buffer |= Int(data[position]) << available
                position += 1
                available += 8
            }
            let value = buffer & ((1 << n) - 1)
            buffer >>= n
            available -= n
            return value
        }

        mutating func decode(_ h: Huffman) throws -> Int {
            var code = 0, first = 0, index = 0
            for length in 1...15 {
                code |= try bits(1)
                let count = h.counts[length]
                if code - first < count { return h.symbols[index + code - first] }
                index += count
                first = (first + count) << 1
                code <<= 1
            }
            throw Failure(description: "bad Huffman code")
        }
    }

    static let lengthBase = [3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258]
    static let lengthExtra = [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0]
    static let distanceBase = [1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537, 2049, 3073,
                               4097, 6145, 8193, 12289, 16385, 24577]
    static let distanceExtra = [0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13]
    static let order = [16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15]

    static func zlib(_ data: [UInt8]) throws -> [UInt8] {
        guard data.count > 2, data[0] & 0x0f == 8, (Int(data[0]) << 8 | Int(data[1])) % 31 == 0 else { throw Failure(description: "not a zlib stream") }
        var reader = Reader(data: data, position: 2)
        var out: [UInt8] = []
        out.reserveCapacity(data.count * 8)
        var last = 0
        repeat {
            last = try reader.bits(1)
            switch try reader.bits(2) {
            case 0:
                reader.buffer = 0
                reader.available = 0
                guard reader.position + 4 <= data.count else { throw Failure(description: "stored block header ends early") }
                let length = Int(data[reader.position]) | Int(data[reader.position + 1]) << 8
                reader.position += 4
                guard reader.position + length <= data.count else { throw Failure(description: "stored block ends early") }
                out += data[reader.position..<(reader.position + length)]
                reader.position += length
            case 1:
                let literal = Huffman((0..<288).map { $0 < 144 ? 8 : $0 < 256 ? 9 : $0 < 280 ? 7 : 8 })
                try block(&reader, &out, literal, Huffman([Int](repeating: 5, count: 30)))
            case 2:
                let nLiteral = try reader.bits(5) + 257, nDistance = try reader.bits(5) + 1, nCode = try reader.bits(4) + 4
                var codeLengths = [Int](repeating: 0, count: 19)
                for i in 0..<nCode { codeLengths[order[i]] = try reader.bits(3) }
                let codes = Huffman(codeLengths)
                var lengths: [Int] = []
                while lengths.count < nLiteral + nDistance {
                    let symbol = try reader.decode(codes)
                    switch symbol {
                    case 0..<16: lengths.append(symbol)
                    case 16:
                        guard let previous = lengths.last else { throw Failure(description: "repeat with nothing before") }
                        lengths += [Int](repeating: previous, count: try reader.bits(2) + 3)
                    case 17: lengths += [Int](repeating: 0, count: try reader.bits(3) + 3)
                    default: lengths += [Int](repeating: 0, count: try reader.bits(7) + 11)
                    }
                }
                try block(&reader, &out, Huffman(Array(lengths[0..<nLiteral])), Huffman(Array(lengths[nLiteral..<(nLiteral + nDistance)])))
            default:
                throw Failure(description: "reserved block type")
            }
        } while last == 0
        return out
    }

    static func block(_ reader: inout Reader, _ out: inout [UInt8], _ literal: Huffman, _ distance: Huffman) throws {
        while true {
            let symbol = try reader.decode(literal)
            if symbol < 256 { out.append(UInt8(symbol)); continue }
            if symbol == 256 { return }
            let l = symbol - 257
            guard l < 29 else { throw Failure(description: "bad length symbol") }
            let length = lengthBase[l] + (try reader.bits(lengthExtra[l]))
            let d = try reader.decode(distance)
            guard d < 30 else { throw Failure(description: "bad distance symbol") }
            let back = distanceBase[d] + (try reader.bits(distanceExtra[d]))
            guard back <= out.count else { throw Failure(description: "distance beyond the output") }
            let start = out.count - back
            for i in 0..<length { out.append(out[start + i]) }
        }
    }
}

/// What a screenshot shows: how much is not white, how many colours, and the report's own
/// colours (the green of a pass, the red of a failure).
private struct PixelCensus: CustomStringConvertible {
    var total = 0
    var nonWhite = 0
    var colours = Set<Int>()
    var green = 0
    var red = 0

    init(_ image: PNGImage) {
        total = image.width * image.height
        for i in stride(from: 0, to: image.pixels.count, by: 4) {
            let r = Int(image.pixels[i]), g = Int(image.pixels[i + 1]), b = Int(image.pixels[i + 2])
            if r < 245 || g < 245 || b < 245 { nonWhite += 1 }
            colours.insert((r >> 4) << 8 | (g >> 4) << 4 | (b >> 4))
            if abs(r - 0x1b) < 24 && abs(g - 0x7a) < 24 && abs(b - 0x3a) < 24 { green += 1 }
            if abs(r - 0xb3) < 24 && abs(g - 0x26) < 24 && abs(b - 0x1e) < 24 { red += 1 }
        }
    }

    var description: String {
        "\(nonWhite) of \(total) pixels not white, \(colours.count) colours (4 bits per channel), \(green) pass-green, \(red) fail-red"
    }
}

@Suite("kho report on a month of kho run, rendered in headless Chromium")
struct ReportTests {
    @Test("a simulated November: HTML in Chromium (no script errors, every dataset, not blank), figures in JSON, --check on untouched and edited copies")
    func month() throws {
        let bench = try ReportBench()
        try bench.simulateNovember(failing: [10, 11])
        let reportTime = "2026-12-01T09:00:00+07:00"
        let period = ["--from", "2026-11-01", "--to", "2026-11-30"]
        let html = bench.box.path("bao-cao-thang-11.html")
        let json = bench.box.path("bao-cao-thang-11.json")
        let made = try bench.run(["report", "--format", "html", "--out", html] + period, env: ["KHO_TEST_NOW": reportTime])
        try #require(made.exitCode == 0, "\(made)")
        try #require(try bench.run(["report", "--format", "json", "--lang", "en", "--out", json] + period, env: ["KHO_TEST_NOW": reportTime]).exitCode == 0)

        // The figures, against what the month did.
        let report = try #require(try JSONSerialization.jsonObject(with: Data(readFile(json))) as? [String: Any])
        let data = try #require(report["data"] as? [String: Any])
        let agencies = try #require(data["agencies"] as? [[String: Any]])
        let datasets = agencies.flatMap { ($0["datasets"] as? [[String: Any]]) ?? [] }
        func dataset(_ key: String) throws -> [String: Any] { try #require(datasets.first { $0["key"] as? String == key }, "\(key)") }
        #expect(datasets.count == 3)
        let vanBan = try dataset("van-ban/van-ban-dump")
        let vanBanBackups = try #require(vanBan["backups"] as? [String: Any])
        #expect(vanBanBackups["planned"] as? Int == 30)
        #expect(vanBanBackups["attempted"] as? Int == 30)
        #expect(vanBanBackups["succeeded"] as? Int == 28)
        #expect(vanBanBackups["failed"] as? Int == 2)
        #expect(vanBanBackups["missed"] as? Int == 0)
        #expect(vanBanBackups["rpoMet"] as? Bool == false, "two failed nights: three days without a new recovery point")
        let failures = try #require(vanBanBackups["failures"] as? [[String: Any]])
        #expect(failures.count == 2)
        #expect(failures.allSatisfy { ($0["error"] as? String ?? "").contains("status 3") || ($0["error"] as? String ?? "").contains("exit") })
        let vanBanDrills = try #require(vanBan["drills"] as? [String: Any])
        #expect((vanBanDrills["done"] as? Int ?? 0) >= 2)
        #expect(vanBanDrills["rtoMet"] as? Bool == false, "an RTO of a millisecond is missed")
        #expect((vanBanDrills["failedChecks"] as? [[String: Any]])?.contains { $0["name"] as? String == "rto" } == true)
        #expect(vanBan["overall"] as? String == "fail")
        let hoSo = try dataset("ho-so/ho-so-scan")
        #expect((hoSo["backups"] as? [String: Any])?["succeeded"] as? Int == 30)
        #expect((hoSo["drills"] as? [String: Any])?["rtoMet"] as? Bool == true)
        #expect((hoSo["drills"] as? [String: Any])?["done"] as? Int ?? 0 >= 4)
        let tuPhap = try dataset("tu-phap/ho-tich-tep")
        #expect((tuPhap["drills"] as? [String: Any])?["done"] as? Int == 0)
        #expect(tuPhap["overall"] as? String == "noEvidence", "never drilled: not a pass")
        let ledger = try #require(data["ledger"] as? [String: Any])
        #expect(ledger["status"] as? String == "intact")
        #expect(((ledger["actions"] as? [[String: Any]]) ?? []).contains { $0["command"] as? String == "drill" })

        // Chromium: the page's DOM and console.
        try #require(Chromium.path != nil, "headless Chromium is needed: apt-get install -y chromium (scripts/test installs it)")
        let dom = try Chromium.run(["--enable-logging=stderr", "--v=0", "--dump-dom"], page: html, box: bench.box)
        try #require(dom.exitCode == 0, "\(dom)")
        #expect(Chromium.consoleLines(dom.err).isEmpty, "console: \(Chromium.consoleLines(dom.err))")
        #expect(dom.out.contains("<html lang=\"vi\">"))
        for key in ["ho-so/ho-so-scan", "van-ban/van-ban-dump", "tu-phap/ho-tich-tep"] { #expect(dom.out.contains(key), "\(key) is not in the DOM") }
        for text in ["Báo cáo kiểm tra sao lưu và khôi phục dữ liệu", "Văn phòng UBND tỉnh Quảng Ngãi", "Điểm khôi phục", "Diễn tập khôi phục", "Không có bằng chứng"] {
            #expect(dom.out.contains(text), "\(text) is not in the DOM")
        }
        #expect(dom.out.components(separatedBy: "<svg").count - 1 == 3)
        // The console check is not vacuous: a page with a script error is caught by it.
        let bad = bench.box.path("loi.html")
        try writeFile(bad, Array("<!DOCTYPE html><html><body><p>x</p><script>khongCoHamNay()</script></body></html>".utf8))
        let badRun = try Chromium.run(["--enable-logging=stderr", "--v=0", "--dump-dom"], page: bad, box: bench.box)
        #expect(Chromium.consoleLines(badRun.err).contains { $0.contains("Uncaught") }, "the detector missed a script error: \(badRun.err.suffix(2000))")

        // The screenshot, against a blank page's.
        let shot = bench.box.path("bao-cao.png")
        let blankPage = bench.box.path("trang-trang.html")
        let blankShot = bench.box.path("trang-trang.png")
        try writeFile(blankPage, Array("<!DOCTYPE html><html lang=\"vi\"><head><meta charset=\"utf-8\"></head><body></body></html>".utf8))
        for (page, png) in [(html, shot), (blankPage, blankShot)] {
            let result = try Chromium.run(["--screenshot=\(png)", "--window-size=1240,1754"], page: page, box: bench.box)
            try #require(result.exitCode == 0 && access(png, R_OK) == 0, "\(result)")
        }
        let image = try PNGImage(try readFile(shot))
        let blank = try PNGImage(try readFile(blankShot))
        #expect(image.width == 1240 && image.height == 1754)
        let census = PixelCensus(image)
        let blankCensus = PixelCensus(blank)
        #expect(blankCensus.nonWhite == 0, "the decoder reads a blank page as blank: \(blankCensus)")
        #expect(census.nonWhite > census.total / 50, "\(census)")
        #expect(census.colours.count > 40, "\(census)")
        #expect(census.green > 200, "pass badges and bars: \(census)")
        #expect(census.red > 100, "fail badges and bars: \(census)")
        #expect(try readFile(shot).count > 5 * (try readFile(blankShot)).count)

        // --check: the untouched file matches; an edited figure, an edited catalog do not.
        let check = try bench.run(["report", "--check", html])
        #expect(check.exitCode == 0, "\(check)")
        #expect(check.out.contains("OK"))
        #expect(try bench.run(["report", "--check", json]).exitCode == 0)
        let text = String(decoding: try readFile(html), as: UTF8.self)
        let edited = bench.box.path("bao-cao-da-sua.html")
        try #require(text.contains(">93,3%<"), "the success rate of van-ban (28 of 30) is in the page")
        try writeFile(edited, Array(text.replacingOccurrences(of: ">93,3%<", with: ">100,0%<").utf8))
        let caught = try bench.run(["report", "--check", edited])
        #expect(caught.exitCode == 12, "\(caught)")
        #expect(caught.out.contains("MISMATCH"))
        let jsonText = String(decoding: try readFile(json), as: UTF8.self)
        let editedJSON = bench.box.path("bao-cao-da-sua.json")
        try writeFile(editedJSON, Array(jsonText.replacingOccurrences(of: "\"failed\" : 2", with: "\"failed\" : 0").utf8))
        let caughtJSON = try bench.run(["report", "--check", editedJSON])
        #expect(caughtJSON.exitCode == 12, "\(caughtJSON)")
        #expect(caughtJSON.out.contains("failed"), "the JSON check names what differs: \(caughtJSON.out)")
        #expect(try bench.run(["report", "--check", bench.passwordFile]).exitCode == 2, "not a report: a usage error")
        #expect(try bench.run(["report", "--format", "pdf"]).exitCode == 2)
        #expect(try bench.run(["report", "--policy", "khong-co"]).exitCode == 2)
    }
}
