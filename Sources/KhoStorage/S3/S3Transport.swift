internal import AsyncHTTPClient
import Foundation
import KhoCore
import KhoSupport
internal import NIOCore
internal import NIOPosix
internal import NIOSSL

/// A request that got no HTTP answer (no connection, a timeout, a lost connection, a refused TLS
/// certificate), in words, and whether trying again may help.
struct TransportProblem: CustomStringConvertible {
    var description: String
    var isTransient: Bool
    var isCertificateProblem = false

    /// `caFile` and `host` only shape the advice for a refused certificate.
    init(_ error: any Error, caFile: String?, host: String) {
        self.init(description: "", isTransient: true)
        self.host = host
        classify(error, caFile: caFile)
    }

    private var host = ""

    private init(description: String, isTransient: Bool) {
        self.description = description
        self.isTransient = isTransient
    }

    private mutating func set(_ text: String, transient: Bool) {
        description = text
        isTransient = transient
    }

    private mutating func classify(_ error: any Error, caFile: String?) {
        switch error {
        case let error as HTTPClientError:
            switch error {
            case .readTimeout, .writeTimeout, .connectTimeout, .tlsHandshakeTimeout, .deadlineExceeded, .getConnectionFromPoolTimeout:
                set("timed out", transient: true)
            case .remoteConnectionClosed, .uncleanShutdown, .requestStreamCancelled:
                set("connection lost", transient: true)
            case .proxyAuthenticationRequired:
                set("the proxy asks for a user and password (407), which kho does not send", transient: false)
            case .invalidProxyResponse:
                set("the proxy refused to open a connection to the server", transient: false)
            case .invalidURL, .emptyHost, .emptyScheme, .alreadyShutdown, .shutdownUnsupported, .redirectLimitReached,
                 .redirectCycleDetected, .invalidRedirectConfiguration, .invalidHTTPVersionConfiguration, .bodyLengthMismatch,
                 .invalidProxyConfiguration:
                set("\(error)", transient: false)
            default:
                set("\(error)", transient: true)
            }
        case let error as NIOConnectionError:
            if let dns = error.dnsAError ?? error.dnsAAAAError, error.connectionErrors.isEmpty {
                set("host name not found (\(dns))", transient: true)
            } else if let first = error.connectionErrors.first {
                classify(first.error, caFile: caFile)
            } else {
                set("cannot connect", transient: true)
            }
        case let error as IOError:
            switch error.errnoCode {
            case ECONNREFUSED: set("connection refused", transient: true)
            case ECONNRESET, EPIPE, ECONNABORTED: set("connection lost", transient: true)
            case ETIMEDOUT: set("timed out", transient: true)
            case ENETUNREACH, EHOSTUNREACH: set("no route to the server", transient: true)
            default: set("\(error)", transient: true)
            }
        case let error as ChannelError:
            switch error {
            case .connectTimeout: set("timed out", transient: true)
            case .ioOnClosedChannel, .alreadyClosed, .outputClosed, .inputClosed, .eof: set("connection lost", transient: true)
            default: set("\(error)", transient: true)
            }
        case let error as NIOSSLExtraError where error == .failedToValidateHostname || error == .serverHostnameImpossibleToMatch:
            isCertificateProblem = true
            set("its TLS certificate is refused (it is not for \(host)): write the repository address with a host name that the certificate names, or have the server's certificate made for \(host)", transient: false)
        case let error as NIOSSLError:
            switch error {
            case .handshakeFailed(let reason):
                let text = "\(reason)"
                if text.contains("CERTIFICATE_VERIFY_FAILED") || text.lowercased().contains("certificate") {
                    certificate(Self.boringSSLReason(text), caFile: caFile)
                } else if case .syscallError = reason {
                    set("connection lost during the TLS handshake", transient: true)
                } else {
                    // The server does not speak TLS there, or no protocol or cipher in common:
                    // a setting to correct, not a moment to wait out.
                    set("the TLS handshake failed (\(Self.boringSSLReason(text))); check that the server speaks https on that port", transient: false)
                }
            case .uncleanShutdown:
                set("connection lost", transient: true)
            case .unableToValidateCertificate, .noCertificateToValidate:
                certificate("\(error)", caFile: caFile)
            default:
                set("TLS error \(error)", transient: true)
            }
        case let error as BoringSSLError:
            certificateOrTLS("\(error)", caFile: caFile)
        default:
            let text = "\(error)"
            if text.contains("CERTIFICATE_VERIFY_FAILED") {
                certificate(Self.boringSSLReason(text), caFile: caFile)
            } else {
                set(text, transient: true)
            }
        }
    }

    private mutating func certificateOrTLS(_ text: String, caFile: String?) {
        if text.contains("CERTIFICATE_VERIFY_FAILED") {
            certificate(Self.boringSSLReason(text), caFile: caFile)
        } else {
            set("TLS error \(Self.boringSSLReason(text))", transient: true)
        }
    }

    /// A certificate the trust roots do not accept: never tried again, with the way out.
    private mutating func certificate(_ detail: String, caFile: String?) {
        isCertificateProblem = true
        if let caFile {
            set("its TLS certificate is refused (\(detail): signed neither by the CA of KHO_S3_CA_FILE=\(caFile) nor by one the system trusts, or expired): check that this file holds the CA that signed the server's certificate", transient: false)
        } else {
            set("its TLS certificate is refused (\(detail): not signed by a CA this system trusts, or expired); if a private CA signed it, set KHO_S3_CA_FILE to that CA's PEM file, or add the CA to the system's certificate store (copy it to /usr/local/share/ca-certificates/NAME.crt, then run update-ca-certificates)", transient: false)
        }
    }

    /// "…:SSL routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED]…" → "CERTIFICATE_VERIFY_FAILED".
    static func boringSSLReason(_ text: String) -> String {
        var reasons: [String] = []
        for part in text.split(separator: "error:").dropFirst() {
            let fields = part.split(separator: ":")
            if fields.count >= 4 {
                let reason = fields[3].prefix { $0.isLetter || $0.isNumber || $0 == "_" }
                if !reason.isEmpty && !reasons.contains(String(reason)) { reasons.append(String(reason)) }
            }
        }
        return reasons.isEmpty ? text : reasons.joined(separator: ", ")
    }
}
