/// The version `wsbridge --version` prints.
public enum WSBridgeVersion {
    public static let current = "0.1.0"
}
