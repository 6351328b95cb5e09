import NIOConcurrencyHelpers
import NIOCore

/// The live channels of a server, so that shutdown can reach and await them.
final class ChannelRegistry: Sendable {
    private let channels = NIOLockedValueBox<[ObjectIdentifier: Channel]>([:])

    func add(_ channel: Channel) {
        let id = ObjectIdentifier(channel)
        self.channels.withLockedValue { $0[id] = channel }
        channel.closeFuture.whenComplete { _ in
            self.channels.withLockedValue { _ = $0.removeValue(forKey: id) }
        }
    }

    var all: [Channel] { self.channels.withLockedValue { Array($0.values) } }
    var count: Int { self.channels.withLockedValue { $0.count } }
}
