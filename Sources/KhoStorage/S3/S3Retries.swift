import Foundation
import KhoCore
import KhoSupport

// When a request is sent again and how long `send` waits first. Timeouts and lost connections are
// judged by `TransportProblem`; answers here.
extension S3Client {
    /// 5xx and 429 answers, and 400 RequestTimeout (the server gave up waiting for the body):
    /// sending again helps.
    static func isRetried(_ response: S3Response) -> Bool {
        response.status >= 500 || response.status == 429
            || (response.status == 400 && S3ErrorBody(response.body)?.code == "RequestTimeout")
    }

    /// The pause after the `attempt`th failed try: doubling from `retryDelay` up to
    /// `maximumRetryDelay`, less a random quarter, so that many workers do not retry in step.
    func pause(after attempt: Int) -> TimeInterval {
        let pause = min(configuration.maximumRetryDelay, configuration.retryDelay * Double(1 << min(attempt - 1, 20)))
        return pause * Double.random(in: 0.75...1.0)
    }

    static func attempts(_ count: Int) -> String { count == 1 ? "1 attempt" : "\(count) attempts" }
}
