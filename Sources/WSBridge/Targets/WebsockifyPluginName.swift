/// websockify's plugin names as `--token-plugin` and `--auth-plugin` take them: the bare class name
/// (`TokenFile`) or websockify's full dotted name (`websockify.token_plugins.TokenFile`). Any other dotted name
/// is a Python class of someone else's module, which wsbridge cannot load: it is refused, never matched by its
/// last component (`x.TokenFile` is not websockify's TokenFile).
public enum WebsockifyPluginName {
    /// The module websockify's plugins of a kind live in.
    public enum Kind: String, Sendable {
        case token = "websockify.token_plugins"
        case auth = "websockify.auth_plugins"
    }

    /// The bare class name for `name`, or nil when `name` is a dotted name outside websockify's module.
    public static func builtIn(_ name: String, kind: Kind) -> String? {
        guard name.contains("." as Character) else { return name }
        let prefix = kind.rawValue + "."
        guard name.hasPrefix(prefix) else { return nil }
        let base = String(name.dropFirst(prefix.count))
        return base.isEmpty || base.contains("." as Character) ? nil : base
    }

    /// Why a name is refused, for the command line's error message; nil when it is acceptable as a name (it may
    /// still name no plugin wsbridge has).
    public static func refusal(_ name: String, kind: Kind, option: String) -> String? {
        guard Self.builtIn(name, kind: kind) == nil else { return nil }
        let last = name.split(separator: ".").last.map(String.init) ?? name
        return
            "\(option) \(name): wsbridge cannot load Python plugins; its built-in plugins are named as websockify names them (\(kind.rawValue).\(last), or \(last))"
    }
}
