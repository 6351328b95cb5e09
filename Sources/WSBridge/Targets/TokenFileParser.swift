/// websockify's `TokenFile` format: `token: host:port` per line, `#` comments, blank lines ignored.
///
/// The token ends at the first `:` followed by white space (websockify splits on the regex `:\s`); the target is
/// split on its last colon, so IPv6 may be written bare (`::1:5900`) or bracketed (`[::1]:5900`). Lines end as
/// Python's text files end them (LF, CRLF or a lone CR) and a leading byte-order mark is dropped, so files written
/// on Windows or by other generators read as websockify reads them. websockify skips a malformed line (it logs a
/// syntax error and serves the others): `parse(_:file:errors:)` collects such lines for the caller to warn about.
public enum TokenFileParser {
    /// The lines of a token file: split on LF, CRLF and CR (Swift's `"\r\n"` is one `Character`, so splitting on
    /// `"\n"` alone would make a CRLF file one line), after a leading BOM. Empty lines are kept, for line numbers.
    public static func lines(_ text: String) -> [Substring] {
        var body = Substring(text)
        if body.first == "\u{FEFF}" { body = body.dropFirst() }
        return body.split(
            omittingEmptySubsequences: false,
            whereSeparator: { $0 == "\n" || $0 == "\r\n" || $0 == "\r" }
        )
    }

    public static func parse(_ text: String, file: String) throws -> TargetsFileContents {
        var errors: [TargetsFileError] = []
        let contents = Self.parse(text, file: file, errors: &errors)
        if let first = errors.first { throw first }
        return contents
    }

    /// Parses every line, collecting the errors of all bad lines (for `wsbridge check`).
    public static func parse(_ text: String, file: String, errors: inout [TargetsFileError]) -> TargetsFileContents {
        var contents = TargetsFileContents()
        var lineNumber = 0
        for rawLine in Self.lines(text) {
            lineNumber += 1
            let line = rawLine.trimmingWhitespace()
            if line.isEmpty || line.hasPrefix("#") { continue }
            guard let separator = Self.separator(in: line) else {
                errors.append(
                    TargetsFileError(
                        file: file,
                        line: lineNumber,
                        message: "expected 'token: host:port' (a colon and a space after the token)"
                    )
                )
                continue
            }
            let token = String(line[..<separator]).trimmingWhitespace()
            let rest = String(line[line.index(after: separator)...]).trimmingWhitespace()
            guard !token.isEmpty else {
                errors.append(TargetsFileError(file: file, line: lineNumber, message: "empty token"))
                continue
            }
            switch BackendAddress.parseHostPort(rest) {
            case .success(let backend):
                let target = Target(
                    name: Target.redact(token),
                    backend: backend,
                    definedAt: "\(file):\(lineNumber)"
                )
                contents.entries.append(.init(token: token, target: target, line: lineNumber))
            case .failure(let error):
                errors.append(TargetsFileError(file: file, line: lineNumber, message: error.message))
            }
        }
        return contents
    }

    /// The index of the first `:` that is followed by white space.
    private static func separator(in line: String) -> String.Index? {
        var index = line.startIndex
        while index < line.endIndex {
            if line[index] == ":" {
                let next = line.index(after: index)
                if next < line.endIndex, line[next].isWhitespace { return index }
            }
            index = line.index(after: index)
        }
        return nil
    }
}
