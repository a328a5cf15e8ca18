import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif
import KhoCore
import KhoSupport

/// Collects the text of elements by their path (e.g. `Error/Code`), calling `element` when one
/// ends. XMLParser is the one XML reader Foundation has on Linux.
final class XMLCollector: NSObject, XMLParserDelegate {
    private var path: [String] = []
    private var text = ""
    private let element: (_ path: [String], _ text: String) -> Void

    init(element: @escaping (_ path: [String], _ text: String) -> Void) {
        self.element = element
    }

    func parse(_ data: Data) -> Bool {
        let parser = XMLParser(data: data)
        parser.delegate = self
        parser.shouldProcessNamespaces = true
        return parser.parse()
    }

    func parser(_ parser: XMLParser, didStartElement elementName: String, namespaceURI: String?, qualifiedName: String?,
                attributes: [String: String] = [:]) {
        path.append(elementName)
        text = ""
    }

    func parser(_ parser: XMLParser, foundCharacters string: String) {
        text += string
    }

    func parser(_ parser: XMLParser, didEndElement elementName: String, namespaceURI: String?, qualifiedName: String?) {
        element(path, text)
        text = ""
        path.removeLast()
    }
}

/// An S3 error answer: `<Error><Code>…</Code><Message>…</Message></Error>`.
struct S3ErrorBody {
    var code = ""
    var message = ""
    var endpoint: String?

    init?(_ data: Data) {
        guard !data.isEmpty else { return nil }
        var result = S3ErrorBody(code: "", message: "")
        let ok = XMLCollector { path, text in
            guard path.count == 2, path[0] == "Error" else { return }
            switch path[1] {
            case "Code": result.code = text
            case "Message": result.message = text
            case "Endpoint": result.endpoint = text
            default: break
            }
        }.parse(data)
        guard ok, !result.code.isEmpty else { return nil }
        self = result
    }

    private init(code: String, message: String) {
        self.code = code
        self.message = message
    }
}

/// One page of a ListObjectsV2 answer.
struct ListPage {
    var objects: [S3Object] = []
    var truncated = false
    var nextToken: String?

    init?(_ data: Data) {
        var page = ListPage()
        var key: String?
        var size: Int?
        var modified: Date?
        var broken = false
        var root = false
        let ok = XMLCollector { path, text in
            switch path {
            case ["ListBucketResult"]: root = true
            case ["ListBucketResult", "IsTruncated"]: page.truncated = text.trimmingCharacters(in: .whitespaces) == "true"
            case ["ListBucketResult", "NextContinuationToken"]: page.nextToken = text
            case ["ListBucketResult", "Contents", "Key"]: key = text
            case ["ListBucketResult", "Contents", "Size"]: size = Int(text.trimmingCharacters(in: .whitespaces))
            case ["ListBucketResult", "Contents", "LastModified"]: modified = Timestamp.parse(text.trimmingCharacters(in: .whitespaces))
            case ["ListBucketResult", "Contents"]:
                if let key, let size { page.objects.append(S3Object(key: key, size: size, modified: modified)) } else { broken = true }
                key = nil
                size = nil
                modified = nil
            default: break
            }
        }.parse(data)
        guard ok, root, !broken else { return nil }
        self = page
    }

    private init() {}
}
