extension NATSClient {
    /// Whether `serverError` (the text of a `.serverError` connection event) is the server's
    /// `Permissions Violation for Subscription to "subject"` for exactly `subject`.
    public static func isSubscriptionDenial(_ serverError: String, subject: String) -> Bool {
        guard let denied = permissionViolation(serverError) else { return false }
        return denied.operation == .subscription && denied.subject == subject
    }
}

extension NATSClient {
    /// Whether `serverError` is the server's `Permissions Violation for Publish to "subject"`
    /// for exactly `subject`.
    public static func isPublishDenial(_ serverError: String, subject: String) -> Bool {
        guard let denied = permissionViolation(serverError) else { return false }
        return denied.operation == .publish && denied.subject == subject
    }
}

extension NATSClient {
    /// The operation and subject of a `Permissions Violation for Publish to "x"` (or
    /// `Subscription to "x"`) error.
    struct PermissionViolation: Equatable {
        enum Operation { case publish, subscription }
        var operation: Operation
        var subject: String
    }

    static func permissionViolation(_ text: String) -> PermissionViolation? {
        let lower = text.lowercased()
        let operation: PermissionViolation.Operation
        if lower.contains("permissions violation for publish to") {
            operation = .publish
        } else if lower.contains("permissions violation for subscription to") {
            operation = .subscription
        } else {
            return nil
        }
        guard let open = text.firstIndex(of: "\"") else { return nil }
        let rest = text[text.index(after: open)...]
        guard let close = rest.firstIndex(of: "\"") else { return nil }
        return PermissionViolation(operation: operation, subject: String(rest[..<close]))
    }
}
