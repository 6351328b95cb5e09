import XCTest

@testable import WSBridge

final class TokenRedactionTests: XCTestCase {
    func testRequestTargets() {
        let token = "s3cr3t-token-0123456789"
        let path = UpgradePolicy.TokenSources(pathTemplate: "/t/{token}")
        XCTAssertEqual(TokenRedaction.uri("/t/\(token)", sources: path), "/t/s3cr…")
        XCTAssertEqual(TokenRedaction.uri("/t/\(token)?x=1", sources: path), "/t/s3cr…?…")
        // Conservative: the segment where the template puts the token is redacted even when the others differ.
        XCTAssertEqual(TokenRedaction.uri("/other/\(token)", sources: path), "/other/s3cr…")
        XCTAssertEqual(TokenRedaction.uri("/a/b/c", sources: path), "/a/b/c")
        XCTAssertEqual(TokenRedaction.uri("/?token=\(token)"), "/?…")
        XCTAssertEqual(TokenRedaction.uri("/websockify"), "/websockify")
        XCTAssertEqual(TokenRedaction.uri("/x#\(token)"), "/x#…")
        let first = UpgradePolicy.TokenSources(pathTemplate: "/{token}")
        XCTAssertEqual(TokenRedaction.uri("/\(token)", sources: first), "/s3cr…")
        for uri in ["/t/\(token)", "/t/\(token)?token=\(token)", "/?token=\(token)"] {
            XCTAssertFalse(TokenRedaction.uri(uri, sources: path).contains(token), uri)
        }
    }

    func testBackendsAndLocationsNamedByTheirToken() {
        let token = "socket-token-0123456789"
        let socket = Target(
            name: Target.redact(token),
            backend: .unix(path: "/run/vnc/\(token)"),
            definedAt: "/run/vnc/\(token)"
        )
        XCTAssertEqual(TokenRedaction.backend(socket), "unix:/run/vnc/sock…")
        XCTAssertEqual(TokenRedaction.location(socket), "/run/vnc/sock…")
        let file = Target(
            name: Target.redact(token),
            backend: .tcp(host: "h", port: 1),
            definedAt: "/etc/tokens/\(token):1"
        )
        XCTAssertEqual(TokenRedaction.location(file), "/etc/tokens/sock…:1")
        let named = Target(name: "console", backend: .unix(path: "/run/console.sock"), definedAt: "/etc/t.yaml:3")
        XCTAssertEqual(TokenRedaction.backend(named), "unix:/run/console.sock")
        XCTAssertEqual(TokenRedaction.location(named), "/etc/t.yaml:3")
        XCTAssertEqual(
            TokenRedaction.scrub("GET http://api/\(token) failed", token: token),
            "GET http://api/sock… failed"
        )
    }
}
