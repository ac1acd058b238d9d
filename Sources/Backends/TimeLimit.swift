import Synchronization

/// Runs `body` in a task of its own and waits for it at most `limit`: its result, or nil when
/// the limit passed first. The task is not awaited past the limit (it keeps running, and its
/// result is dropped), so a call that hangs - an actor that never answers, a D-Bus call
/// without a reply - cannot hang the caller. Cancelling the caller ends the wait with nil.
public func withTimeLimit<T: Sendable>(_ limit: Duration, _ body: @escaping @Sendable () async -> T) async -> T? {
    let gate = OneShot<T?>()
    let worker = Task { gate.resume(await body()) }
    let timer = Task {
        try? await Task.sleep(for: limit)
        gate.resume(nil)
    }
    let result = await withTaskCancellationHandler {
        await gate.value()
    } onCancel: {
        gate.resume(nil)
    }
    timer.cancel()
    _ = worker
    return result
}

/// A value delivered once to one waiter; later deliveries are dropped.
private final class OneShot<Value: Sendable>: Sendable {
    private enum State {
        case empty
        case waiting(CheckedContinuation<Value, Never>)
        case done(Value)
        case consumed
    }

    private let state = Mutex<State>(.empty)

    func resume(_ value: Value) {
        let waiter: CheckedContinuation<Value, Never>? = state.withLock { state in
            switch state {
            case .empty:
                state = .done(value)
                return nil
            case .waiting(let continuation):
                state = .consumed
                return continuation
            case .done, .consumed:
                return nil
            }
        }
        waiter?.resume(returning: value)
    }

    func value() async -> Value {
        await withCheckedContinuation { (continuation: CheckedContinuation<Value, Never>) in
            let ready: Value? = state.withLock { state in
                switch state {
                case .empty:
                    state = .waiting(continuation)
                    return nil
                case .done(let value):
                    state = .consumed
                    return value
                case .waiting, .consumed:
                    preconditionFailure("OneShot awaited twice")
                }
            }
            if let ready { continuation.resume(returning: ready) }
        }
    }
}
