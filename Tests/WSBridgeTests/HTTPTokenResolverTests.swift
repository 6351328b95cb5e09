import XCTest

@testable import WSBridge

final class HTTPTokenResolverTests: XCTestCase {
    func testTokenIsPercentEncodedInTheURL() {
        XCTAssertEqual(
            HTTPTokenResolver.url(template: "http://api/t/%s", token: "abc-._~XYZ09"),
            "http://api/t/abc-._~XYZ09"
        )
        XCTAssertEqual(
            HTTPTokenResolver.url(template: "http://api/t/%s?x=1", token: "a/b c?&#%é"),
            "http://api/t/a%2Fb%20c%3F%26%23%25%C3%A9?x=1"
        )
        XCTAssertEqual(
            HTTPTokenResolver.url(template: "http://api/?token=%s", token: "../.."),
            "http://api/?token=..%2F.."
        )
    }

    func testBodies() {
        func backend(_ text: String, _ format: HTTPTokenResolver.Format) -> BackendAddress? {
            HTTPTokenResolver.backend(fromBody: Array(text.utf8), format: format)
        }
        XCTAssertEqual(backend("10.0.0.1:5900\n", .text), .tcp(host: "10.0.0.1", port: 5900))
        XCTAssertEqual(backend("::1:5900", .text), .tcp(host: "::1", port: 5900))
        XCTAssertNil(backend("{\"host\": \"h\", \"port\": 1}", .text))
        XCTAssertEqual(backend("{\"host\": \"h\", \"port\": 1}", .json), .tcp(host: "h", port: 1))
        XCTAssertEqual(backend("{\"host\": \"h:2\"}", .json), .tcp(host: "h", port: 2))
        XCTAssertNil(backend("h:1", .json))
        XCTAssertNil(backend("<html>", .text))
    }
}
