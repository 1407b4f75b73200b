import Server
import Config
import Foundation
import Logging
import ServiceLifecycle
import Synchronization
import Store
import Proxy
import Wire

/// Finished requests on their way to the ledger. ``record(_:)`` runs on the request path (a
/// lock and an append, nothing more); ``run()`` writes what is pending every 250 ms, in one
/// transaction, and once more at shutdown. A full queue never blocks or drops a request:
/// the row is folded into its hourly sum in memory and counted. A batch the store refuses
/// stays pending (folded into sums beyond the queue's size) and goes with the next.
final class LedgerWriter: Service, Sendable {
    private struct Pending {
        var rows: [LedgerRow] = []
        var sums: [UsageBucket.Key: UsageBucket] = [:]
    }

    private let pending = Mutex(Pending())
    /// Batches the store refused in a row (logged at the first and every 40th: every 10 s).
    private let failures = Mutex(0)
    private let store: any HubStore
    private let capacity: Int
    private let retention: (rows: Duration, buckets: Duration)
    private let metrics: HubMetrics?
    private let logger: Logger
    static let interval: Duration = .milliseconds(250)

    init(store: any HubStore, config: LedgerConfig, metrics: HubMetrics?, logger: Logger) {
        self.store = store
        capacity = config.queueSize
        retention = (config.retention, config.usageRetention)
        self.metrics = metrics
        self.logger = logger
    }

    func record(_ row: LedgerRow) {
        let folded = pending.withLock { pending in
            guard pending.rows.count >= capacity else {
                pending.rows.append(row)
                return false
            }
            pending.sums[row.bucket, default: UsageBucket(key: row.bucket)].add(row)
            return true
        }
        if folded { metrics?.ledger("aggregated", rows: 1) }
    }

    /// Rows waiting to be written (tests; the dashboard).
    var backlog: Int { pending.withLock { $0.rows.count + $0.sums.values.reduce(0) { $0 + $1.requests } } }

    func run() async throws {
        var pruned = ContinuousClock.Instant.now - .seconds(3600)
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            try? await Task.sleep(for: Self.interval)
            await flush()
            if ContinuousClock.now - pruned >= .seconds(3600) {
                pruned = .now
                await prune()
            }
        }
        await flush()
    }

    /// Writes what is pending; on failure keeps it for the next try.
    func flush() async {
        let batch = pending.withLock { pending in
            defer { pending = Pending() }
            return pending
        }
        guard !batch.rows.isEmpty || !batch.sums.isEmpty else { return }
        do {
            try await store.append(batch.rows, buckets: Array(batch.sums.values))
            metrics?.ledger("written", rows: batch.rows.count)
            let failed = failures.withLock { failed in
                defer { failed = 0 }
                return failed
            }
            if failed > 0 { logger.notice("ledger: written again after \(failed) refused batches; nothing was lost") }
        } catch {
            metrics?.ledger("retried", rows: batch.rows.count)
            let failed = failures.withLock { failed in
                failed += 1
                return failed
            }
            if failed % 40 == 1 {
                logger.error("ledger: the store refused a batch; keeping it for the next write", metadata: [
                    "rows": "\(batch.rows.count)", "reason": "\(error)", "refused_in_a_row": "\(failed)",
                ])
            }
            pending.withLock { pending in
                var kept = batch.rows + pending.rows
                var sums = batch.sums
                for (key, sum) in pending.sums { sums[key, default: UsageBucket(key: key)].add(sum) }
                while kept.count > capacity, let row = kept.popLast() { sums[row.bucket, default: UsageBucket(key: row.bucket)].add(row) }
                pending = Pending(rows: kept, sums: sums)
            }
        }
    }

    private func prune() async {
        let now = Date()
        do {
            try await store.prune(rowsBefore: now.addingTimeInterval(-retention.rows.inSeconds),
                                  bucketsBefore: now.addingTimeInterval(-retention.buckets.inSeconds))
        } catch {
            logger.warning("ledger: pruning old rows failed", metadata: ["reason": "\(error)"])
        }
    }
}

extension LedgerRow {
    /// The ledger's row of a finished request, from its access record.
    init(record: AccessRecord, fields: AccessRecord.Fields, status: Int, outcome: String, duration: Duration) {
        self.init(at: Date(), requestID: record.id, subject: fields.subject ?? "anonymous", model: fields.model,
                  worker: fields.worker, outcome: outcome, status: status, code: fields.code?.rawValue,
                  promptTokens: fields.usage?.prompt ?? 0, completionTokens: fields.usage?.completion ?? 0,
                  cachedTokens: fields.usage?.cached ?? 0, ttftMilliseconds: fields.ttft?.milliseconds,
                  durationMilliseconds: duration.milliseconds)
    }
}
