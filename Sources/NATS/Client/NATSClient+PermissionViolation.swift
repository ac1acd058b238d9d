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
