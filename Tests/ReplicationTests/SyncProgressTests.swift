import Foundation
import Testing

@testable import Replication

@Suite struct SyncProgressTests {
    @Test func logLineIsDueEveryIntervalNotPerChunk() {
        let start = ContinuousClock.now
        var progress = SyncProgress(initial: true, snapshot: "snapshot-1", txid: 7, now: start, logInterval: .seconds(5))
        var due: [Int] = []
        // A 128 KiB chunk every 10 ms for 12 s.
        for step in 1...1200 {
            if progress.update(bytesDone: UInt64(step) * 131_072, bytesTotal: 1200 * 131_072, now: start + .milliseconds(step * 10)) {
                due.append(step)
            }
        }
        #expect(due == [500, 1000])
        #expect(progress.percent == 100)
        #expect(progress.bytesDone == progress.bytesTotal)
    }

    @Test func rateAndPercent() {
        let start = ContinuousClock.now
        var progress = SyncProgress(initial: false, snapshot: "s", txid: 1, now: start)
        #expect(progress.percent == 0)
        #expect(progress.bytesPerSecond == 0)
        _ = progress.update(bytesDone: 50 * 1_048_576, bytesTotal: 200 * 1_048_576, now: start + .milliseconds(500))
        #expect(progress.percent == 25)
        #expect(abs(progress.bytesPerSecond - 100 * 1_048_576) < 1)
        #expect(progress.summary == "25% (50.0 of 200.0 MiB, 100.0 MiB/s)")
        progress.verifying(now: start + .seconds(2))
        #expect(progress.phase == .verifying)
        #expect(progress.bytesDone == 200 * 1_048_576)
        #expect(progress.summary == "verifying 200.0 MiB")
    }

    @Test func unknownSizeIsZeroPercent() {
        let start = ContinuousClock.now
        var progress = SyncProgress(initial: true, snapshot: "s", txid: 1, now: start)
        let due = progress.update(bytesDone: 10, bytesTotal: 0, now: start + .milliseconds(1))
        #expect(!due)
        #expect(progress.percent == 0)
    }
}
