import Foundation
import Testing

@testable import Backends

/// ``EpochFileQueue``: epoch file writes and removals run off the caller, in the order they were
/// asked for — what lets the systemd backend's stop and fence queue "remove the epoch file"
/// behind a start's write and stop the unit only once the removal ran.
@Suite("Epoch file queue")
struct EpochFileQueueTests {
    enum Operation: CustomStringConvertible {
        case write(UInt64)
        case remove
        var description: String {
            switch self {
            case .write(let epoch): "write \(epoch)"
            case .remove: "remove"
            }
        }
    }

    /// Every sequence of 1 to 5 writes and removals, enqueued without waiting in between: the
    /// file ends as the last operation left it (exhaustive, so no seed).
    @Test func operationsRunInTheOrderTheyWereAskedFor() async throws {
        let directory = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let queue = EpochFileQueue()
        var case_ = 0
        for length in 1...5 {
            for bits in 0..<(1 << length) {
                case_ += 1
                let path = "\(directory)/case-\(case_)/epoch"
                let operations: [Operation] = (0..<length).map { bits & (1 << $0) != 0 ? .write(UInt64(case_ * 10 + $0)) : .remove }
                let pending = operations.map { operation in
                    switch operation {
                    case .write(let epoch): queue.write(epoch: epoch, to: path)
                    case .remove: queue.remove(at: path)
                    }
                }
                for operation in pending { try await operation.value() }
                let contents = try? String(contentsOfFile: path, encoding: .utf8)
                switch operations.last {
                case .write(let epoch): #expect(contents == "BATON_EPOCH=\(epoch)\n", "\(operations)")
                case .remove, nil: #expect(contents == nil, "\(operations)")
                }
            }
        }
        #expect(case_ == 62)
    }

    @Test func aFailureNamesTheFileAndTheOperation() async throws {
        let directory = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        // A plain file where the epoch file's directory should be.
        let blocker = "\(directory)/not-a-directory"
        #expect(FileManager.default.createFile(atPath: blocker, contents: Data()))
        let queue = EpochFileQueue()
        await #expect {
            try await queue.write(epoch: 1, to: "\(blocker)/epoch").value()
        } throws: { error in
            "\(error)".contains("create \(blocker)/epoch") && "\(error)".contains("failed")
        }
        // A removal of a missing file is not an error.
        try await queue.remove(at: "\(directory)/missing/epoch").value()
    }
}
