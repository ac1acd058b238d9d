/// Subject and queue-group checks done before anything is sent, so a bad name fails with a clear
/// error instead of a server `-ERR` that closes nothing and explains little.
public enum NATSSubject {
    /// Checks a subject for publishing: non-empty tokens, no whitespace or control characters, no
    /// wildcards.
    public static func validatePublish(_ subject: String) throws(NATSError) {
        try validate(subject, allowWildcards: false)
    }

    /// Checks a subject for subscribing: as for publishing, but `*` may stand for a whole token and
    /// `>` for the whole last token.
    public static func validateSubscribe(_ subject: String) throws(NATSError) {
        try validate(subject, allowWildcards: true)
    }

    /// Checks a queue group name: non-empty, no whitespace or control characters.
    public static func validateQueueGroup(_ queue: String) throws(NATSError) {
        if queue.isEmpty {
            throw NATSError(.invalidQueueGroup, "queue group name is empty")
        }
        for byte in queue.utf8 where byte <= 0x20 || byte == 0x7f {
            throw NATSError(.invalidQueueGroup, "queue group \"\(queue)\" contains whitespace or a control character")
        }
    }

    /// Whether a subscription subject (with wildcards) matches a concrete subject.
    public static func matches(filter: String, subject: String) -> Bool {
        let filterTokens = filter.split(separator: ".", omittingEmptySubsequences: false)
        let subjectTokens = subject.split(separator: ".", omittingEmptySubsequences: false)
        for (index, token) in filterTokens.enumerated() {
            if token == ">" { return subjectTokens.count > index }
            guard index < subjectTokens.count else { return false }
            if token != "*" && token != subjectTokens[index] { return false }
        }
        return filterTokens.count == subjectTokens.count
    }

    private static func validate(_ subject: String, allowWildcards: Bool) throws(NATSError) {
        if subject.utf8.isEmpty {
            throw NATSError(.invalidSubject, "subject is empty")
        }
        var tokenLength = 0
        var tokenHasWildcard = false
        var sawFullWildcard = false
        for byte in subject.utf8 {
            switch byte {
            case UInt8(ascii: "."):
                if tokenLength == 0 {
                    throw NATSError(.invalidSubject, "subject \"\(subject)\" has an empty token")
                }
                if sawFullWildcard {  // a token follows '>' (the check below misses a wildcard token)
                    throw NATSError(.invalidSubject, "subject \"\(subject)\": '>' must be the last token")
                }
                tokenLength = 0
                tokenHasWildcard = false
                continue
            case 0...0x20, 0x7f:
                throw NATSError(.invalidSubject, "subject \"\(subject)\" contains whitespace or a control character")
            case UInt8(ascii: "*"), UInt8(ascii: ">"):
                if !allowWildcards {
                    throw NATSError(.invalidSubject, "subject \"\(subject)\" contains a wildcard; publish to a concrete subject")
                }
                if tokenLength != 0 {
                    throw NATSError(.invalidSubject, "subject \"\(subject)\": a wildcard must be a whole token")
                }
                tokenHasWildcard = true
                sawFullWildcard = sawFullWildcard || byte == UInt8(ascii: ">")
            default:
                if tokenHasWildcard {
                    throw NATSError(.invalidSubject, "subject \"\(subject)\": a wildcard must be a whole token")
                }
            }
            if sawFullWildcard && !(tokenHasWildcard && tokenLength == 0) {
                throw NATSError(.invalidSubject, "subject \"\(subject)\": '>' must be the last token")
            }
            tokenLength += 1
        }
        if tokenLength == 0 {
            throw NATSError(.invalidSubject, "subject \"\(subject)\" has an empty token")
        }
    }
}
