import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOEmbedded
import ServiceLifecycle
import XCTest

@testable import WSBridge

final class RESPParserTests: XCTestCase {
    let parser = RESPParser()

    private func parse(_ text: String) throws -> (value: RESPValue, consumed: Int)? {
        try self.parser.parse(Array(text.utf8))
    }

    func testEachType() throws {
        XCTAssertEqual(try self.parse("+OK\r\n")?.value, .simpleString("OK"))
        XCTAssertEqual(try self.parse("-ERR wrong\r\n")?.value, .error("ERR wrong"))
        XCTAssertEqual(try self.parse(":-42\r\n")?.value, .integer(-42))
        XCTAssertEqual(try self.parse("$5\r\nhello\r\n")?.value, .bulkString(Array("hello".utf8)))
        XCTAssertEqual(try self.parse("$0\r\n\r\n")?.value, .bulkString([]))
        XCTAssertEqual(try self.parse("$-1\r\n")?.value, .bulkString(nil))
        XCTAssertEqual(try self.parse("*-1\r\n")?.value, .array(nil))
        XCTAssertEqual(
            try self.parse("*3\r\n$7\r\nmessage\r\n$4\r\nchan\r\n$3\r\ntok\r\n")?.value,
            .array([
                .bulkString(Array("message".utf8)), .bulkString(Array("chan".utf8)), .bulkString(Array("tok".utf8)),
            ])
        )
    }

    func testBinaryBulkStringMayContainCRLF() throws {
        XCTAssertEqual(try self.parse("$4\r\na\r\nb\r\n")?.value, .bulkString(Array("a\r\nb".utf8)))
    }

    func testConsumedStopsAtTheValueEnd() throws {
        let result = try self.parse("+OK\r\n:1\r\n")
        XCTAssertEqual(result?.consumed, 5)
    }

    func testEveryPrefixIsIncompleteNotAnError() throws {
        let whole = Array("*2\r\n$3\r\nfoo\r\n*1\r\n:7\r\n".utf8)
        for end in 0..<whole.count {
            XCTAssertNil(try self.parser.parse(whole[0..<end]), "prefix of \(end) bytes")
        }
        XCTAssertEqual(try self.parser.parse(whole)?.consumed, whole.count)
    }

    func testMalformedInputThrows() {
        for bad in [
            "?x\r\n", "+OK\n", "+O\rK\r\n", ":\r\n", ":12a\r\n", ":--1\r\n", ":99999999999999999999\r\n",
            "$-2\r\n", "$3\r\nabcd\r\n", "$3\r\nabc\n\n", "*-5\r\n", "*1\r\n?\r\n", "$x\r\n",
        ] {
            XCTAssertThrowsError(try self.parse(bad), "accepted \(bad.debugDescription)")
        }
    }

    func testLimits() {
        let small = RESPParser(maxBulkLength: 4, maxArrayCount: 2, maxDepth: 1, maxLineLength: 8)
        XCTAssertThrowsError(try small.parse(Array("$5\r\n".utf8)))
        XCTAssertThrowsError(try small.parse(Array("*3\r\n".utf8)))
        XCTAssertThrowsError(try small.parse(Array("*1\r\n*1\r\n:1\r\n".utf8)))
        XCTAssertThrowsError(try small.parse(Array("+123456789".utf8)))
    }

    /// Random bytes and mutations of valid replies: the parser answers or throws, never traps, and never claims
    /// more bytes than it was given.
    func testFuzz() {
        var generator = SystemRandomNumberGenerator()
        let seeds = ["+OK\r\n", "$5\r\nhello\r\n", "*2\r\n$1\r\na\r\n:12\r\n", "-ERR x\r\n", "*-1\r\n", "$-1\r\n"].map {
            Array($0.utf8)
        }
        let alphabet = Array("+-:$*\r\n0123456789-ab".utf8)
        for round in 0..<20_000 {
            var bytes: [UInt8]
            if round % 2 == 0 {
                bytes = (0..<Int.random(in: 0..<24, using: &generator)).map { _ in
                    alphabet.randomElement(using: &generator)!
                }
            } else {
                bytes = seeds.randomElement(using: &generator)!
                for _ in 0..<Int.random(in: 1...3, using: &generator) where !bytes.isEmpty {
                    let at = Int.random(in: 0..<bytes.count, using: &generator)
                    switch Int.random(in: 0..<3, using: &generator) {
                    case 0: bytes[at] = UInt8.random(in: 0...255, using: &generator)
                    case 1: bytes.remove(at: at)
                    default: bytes.insert(alphabet.randomElement(using: &generator)!, at: at)
                    }
                }
            }
            if let result = try? self.parser.parse(bytes) {
                XCTAssertLessThanOrEqual(result.consumed, bytes.count)
                XCTAssertGreaterThan(result.consumed, 0)
            }
        }
    }

    func testEncodeCommand() {
        XCTAssertEqual(
            String(decoding: RESPValue.encodeCommand(["GET", "a:b"]), as: UTF8.self),
            "*2\r\n$3\r\nGET\r\n$3\r\na:b\r\n"
        )
    }

    func testDecoderOverByteBufferView() throws {
        var buffer = ByteBuffer(string: "xx+OK\r\n")
        buffer.moveReaderIndex(forwardBy: 2)
        XCTAssertEqual(try self.parser.parse(buffer.readableBytesView)?.value, .simpleString("OK"))
        XCTAssertEqual(try self.parser.parse(buffer.readableBytesView)?.consumed, 5)
    }
}

final class RedisTokenSourceTests: XCTestCase {
    func testSourceSyntaxAsWebsockify() throws {
        XCTAssertEqual(try RedisTokenSource.parse("redis"), RedisTokenSource(endpoint: .init(host: "redis")))
        XCTAssertEqual(try RedisTokenSource.parse("redis:6380").endpoint.port, 6380)
        XCTAssertEqual(try RedisTokenSource.parse("redis::").endpoint.port, 6379)
        let full = try RedisTokenSource.parse("redis:6380:2:secret:app")
        XCTAssertEqual(
            full,
            RedisTokenSource(
                endpoint: .init(host: "redis", port: 6380, database: 2, password: "secret"),
                namespace: "app"
            )
        )
        let defaults = try RedisTokenSource.parse("redis:::verysecretpass")
        XCTAssertEqual(defaults.endpoint, .init(host: "redis", port: 6379, database: 0, password: "verysecretpass"))
        XCTAssertEqual(try RedisTokenSource.parse("redis::::my-ns").namespace, "my-ns")
        XCTAssertEqual(try RedisTokenSource.parse("redis::::\"first-ns:second-ns\"").namespace, "first-ns:second-ns")
        XCTAssertEqual(try RedisTokenSource.parse("redis:::\"pa:ss\"").endpoint.password, "pa:ss")
        XCTAssertEqual(try RedisTokenSource.parse("[::1]:6390").endpoint, .init(host: "::1", port: 6390))
        XCTAssertNil(try RedisTokenSource.parse("redis").endpoint.password)
    }

    func testBadSources() {
        for bad in [
            "", ":6379", "redis:port", "redis:1:x", "redis:1:2:3:4:5", "redis:\"unbalanced", "[::1:6379", "redis:70000",
        ] {
            XCTAssertThrowsError(try RedisTokenSource.parse(bad), bad)
        }
    }

    func testKeys() throws {
        XCTAssertEqual(try RedisTokenSource.parse("r").key(for: "t"), "t")
        XCTAssertEqual(try RedisTokenSource.parse("r::::ns").key(for: "t"), "ns:t")
    }

    func testValuesAsWebsockifyStoresThem() {
        func backend(_ text: String) -> BackendAddress? { RedisTokenSource.backend(fromValue: Array(text.utf8)) }
        XCTAssertEqual(backend("{\"host\": \"127.0.0.1:5000\"}"), .tcp(host: "127.0.0.1", port: 5000))
        XCTAssertEqual(backend("127.0.0.1:5000"), .tcp(host: "127.0.0.1", port: 5000))
        XCTAssertEqual(backend("  vnc.internal:5901\n"), .tcp(host: "vnc.internal", port: 5901))
        XCTAssertEqual(backend("::1:5900"), .tcp(host: "::1", port: 5900))
        XCTAssertEqual(backend("[::1]:5900"), .tcp(host: "::1", port: 5900))
        XCTAssertEqual(backend("{\"host\": \"[fd00::5]:5900\"}"), .tcp(host: "fd00::5", port: 5900))
        XCTAssertEqual(backend("{\"host\": \"h\", \"port\": 5900}"), .tcp(host: "h", port: 5900))
        XCTAssertEqual(backend("{\"host\": \"::1\", \"port\": \"5900\"}"), .tcp(host: "::1", port: 5900))
        for bad in ["", "{}", "{\"port\": 1}", "{not json", "host", "a b:1", "h:0", "h:99999", "{\"host\": 5}"] {
            XCTAssertNil(backend(bad), bad)
        }
        XCTAssertNil(RedisTokenSource.backend(fromValue: [0xff, 0xfe]))
    }
}

final class TokenCacheTests: XCTestCase {
    func testTTLNegativeAndStale() {
        let cache = TokenCache(policy: .init(ttl: .seconds(5), negativeTTL: .seconds(1), staleFor: .seconds(30)))
        let start = NIODeadline.uptimeNanoseconds(1_000_000_000_000)
        let target = Target(name: "a", backend: .tcp(host: "h", port: 1))
        cache.store("a", .found(target), now: start)
        cache.store("missing", .notFound, now: start)
        cache.store("bad", .invalid("expired"), now: start)
        cache.store("down", .unavailable("unreachable"), now: start)
        XCTAssertEqual(cache.fresh("a", now: start + .seconds(4)), .found(target))
        XCTAssertEqual(cache.fresh("missing", now: start + .milliseconds(500)), .notFound)
        XCTAssertNil(cache.fresh("missing", now: start + .seconds(2)))
        XCTAssertNil(cache.fresh("a", now: start + .seconds(6)))
        XCTAssertNil(cache.fresh("bad", now: start), "only found and not-found answers are kept")
        XCTAssertNil(cache.fresh("down", now: start))
        XCTAssertEqual(cache.stale("a", now: start + .seconds(29)), target)
        XCTAssertNil(cache.stale("a", now: start + .seconds(31)))
        XCTAssertNil(cache.stale("missing", now: start))
        cache.remove("a")
        XCTAssertNil(cache.stale("a", now: start))
    }

    func testCapacityIsBounded() {
        let cache = TokenCache(policy: .init(ttl: .seconds(5), capacity: 10))
        for index in 0..<25 { cache.store("t\(index)", .found(Target(name: "t", backend: .tcp(host: "h", port: 1)))) }
        XCTAssertLessThanOrEqual(cache.count, 10)
    }

    func testZeroTTLStoresNothing() {
        let cache = TokenCache(policy: .init(ttl: .zero, negativeTTL: .zero, staleFor: .zero))
        cache.store("a", .found(Target(name: "a", backend: .tcp(host: "h", port: 1))))
        XCTAssertNil(cache.fresh("a"))
    }

    /// A token service that answers what the test says, counts its lookups and publishes revocations.
    final class ScriptedService: TokenResolver, TokenRevocations, Service {
        let answer = NIOLockedValueBox(TokenResolution.notFound)
        let lookups = NIOLockedValueBox(0)
        let revoked = LockedObservers<String>()
        let missed = LockedObservers<Void>()
        var name: String { "scripted" }
        func resolve(_ token: String, on eventLoop: EventLoop) -> EventLoopFuture<TokenResolution> {
            self.lookups.withLockedValue { $0 += 1 }
            return eventLoop.makeSucceededFuture(self.answer.withLockedValue { $0 })
        }
        func onRevoke(_ observer: @escaping @Sendable (String) -> Void) { self.revoked.add(observer) }
        func onRevocationsMissed(_ observer: @escaping @Sendable () -> Void) { self.missed.add(observer) }
        func run() async throws {}
    }

    func testCachingResolverCachesFallsBackToStaleAndForgetsRevokedTokens() throws {
        let loop = EmbeddedEventLoop()
        let service = ScriptedService()
        let resolver = CachingTokenResolver(
            service,
            policy: .init(ttl: .seconds(60), negativeTTL: .seconds(60), staleFor: .seconds(600)),
            logger: Logger(label: "test")
        )
        let target = Target(name: "a", backend: .tcp(host: "h", port: 1))
        service.answer.withLockedValue { $0 = .found(target) }
        XCTAssertEqual(try resolver.resolve("a", on: loop).wait(), .found(target))
        XCTAssertEqual(try resolver.resolve("a", on: loop).wait(), .found(target))
        XCTAssertEqual(service.lookups.withLockedValue { $0 }, 1, "the second lookup is answered by the cache")

        // Revoked: asked again, and while the service is down the last answer is gone too.
        service.revoked.call("a")
        service.answer.withLockedValue { $0 = .unavailable("down") }
        XCTAssertEqual(try resolver.resolve("a", on: loop).wait(), .unavailable("down"))
        XCTAssertEqual(service.lookups.withLockedValue { $0 }, 2)

        // Found again, then expired from the fresh cache by a missed-revocations event: the stale answer stands in
        // for an unavailable service only while it is kept.
        service.answer.withLockedValue { $0 = .found(target) }
        XCTAssertEqual(try resolver.resolve("b", on: loop).wait(), .found(target))
        service.missed.call(())
        service.answer.withLockedValue { $0 = .unavailable("down") }
        XCTAssertEqual(try resolver.resolve("b", on: loop).wait(), .unavailable("down"))

        // An invalid answer is never kept.
        service.answer.withLockedValue { $0 = .invalid("expired") }
        XCTAssertEqual(try resolver.resolve("c", on: loop).wait(), .invalid("expired"))
        service.answer.withLockedValue { $0 = .notFound }
        XCTAssertEqual(try resolver.resolve("c", on: loop).wait(), .notFound)
    }

    func testCachingResolverUsesAStaleAnswerWhileTheServiceIsDown() throws {
        let loop = EmbeddedEventLoop()
        let service = ScriptedService()
        // No fresh cache: every lookup asks, and a found answer is kept only as a fallback.
        let resolver = CachingTokenResolver(service, policy: .init(staleFor: .seconds(600)), logger: Logger(label: "t"))
        let target = Target(name: "a", backend: .tcp(host: "h", port: 1))
        service.answer.withLockedValue { $0 = .found(target) }
        XCTAssertEqual(try resolver.resolve("a", on: loop).wait(), .found(target))
        service.answer.withLockedValue { $0 = .unavailable("down") }
        XCTAssertEqual(try resolver.resolve("a", on: loop).wait(), .found(target))
        XCTAssertEqual(try resolver.resolve("other", on: loop).wait(), .unavailable("down"))
        XCTAssertEqual(service.lookups.withLockedValue { $0 }, 3)
    }
}
