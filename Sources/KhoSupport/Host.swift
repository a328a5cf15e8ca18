import Foundation
import Glibc

public enum Host {
    public static var name: String {
        var buffer = [UInt8](repeating: 0, count: 256)
        gethostname(&buffer, 255)
        return String(decoding: buffer.prefix { $0 != 0 }, as: UTF8.self)
    }

    public static var user: String {
        if let pw = getpwuid(geteuid()), let name = pw.pointee.pw_name { return String(cString: name) }
        return String(geteuid())
    }
}
