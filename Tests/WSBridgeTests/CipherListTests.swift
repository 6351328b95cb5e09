import XCTest

@testable import WSBridge

/// `--ssl-ciphers` is checked by BoringSSL itself before NIOSSL sees it (NIOSSL stops the process on a list that
/// selects nothing).
final class CipherListTests: XCTestCase {
    func testListsThatSelectACipherAreAccepted() {
        for list in [
            "HIGH:!aNULL:!MD5", "ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384:NOT-A-CIPHER", "DEFAULT",
        ] {
            XCTAssertTrue(ServerTLSSettings.selectsCiphers(list), list)
        }
    }

    func testListsThatSelectNothingAreRefused() {
        for list in ["NOPE", "!ALL", "", "RC4-MD5"] {
            XCTAssertFalse(ServerTLSSettings.selectsCiphers(list), list)
        }
    }
}
