import Foundation

/// Dynamic batching: requests from any number of connections wait here, and one worker
/// thread takes the oldest ones, up to `limits.maxBatchSequences` sequences and
/// `limits.maxBatchTokens` tokens, gathering for at most `limits.maxWait` after the first
/// arrived, runs them as one packed batch and answers each.
///
/// The queue is bounded (`limits.capacity` sequences waiting): `submit` fails at once with
/// `QueueError.full` beyond it, so memory and waiting time stay bounded under any load.
public final class InferenceQueue: @unchecked Sendable {
    /// What a job asks for: the head's outputs (logits) or pooled sentence vectors.
    public enum Kind: Sendable { case logits, embeddings }

    public enum QueueError: Error, Equatable {
        /// More sequences are waiting than the queue holds.
        case full
        /// The queue is shutting down (a drain after SIGTERM).
        case stopped
    }

    public struct Limits: Sendable {
        public var maxBatchSequences: Int
        public var maxBatchTokens: Int
        /// How long the worker waits for more requests after the first one of a batch.
        public var maxWait: TimeInterval
        /// Sequences that may wait at once (jobs being run are not counted).
        public var capacity: Int
        public init(maxBatchSequences: Int = 64, maxBatchTokens: Int = 8192, maxWait: TimeInterval = 0.002, capacity: Int = 1024) {
            self.maxBatchSequences = max(1, maxBatchSequences)
            self.maxBatchTokens = max(1, maxBatchTokens)
            self.maxWait = max(0, maxWait)
            self.capacity = max(1, capacity)
        }
    }

    struct Job {
        let kind: Kind
        let sequences: [[Int32]]
        let tokens: Int
        let answer: @Sendable (Result<[[Float]], Error>) -> Void
    }

    /// Runs one batch: the sequences of the jobs taken (in order), one output vector each.
    public typealias Runner = @Sendable (Kind, [[Int32]]) throws -> [[Float]]

    public let limits: Limits
    private let runner: Runner
    private let condition = NSCondition()
    private var pending: [Job] = []
    private var head = 0
    private var waitingSequences = 0
    private var stopping = false
    private var finished = false
    private var thread: Thread?
    /// Batches run and sequences in them (for /model and the tests).
    private var counters = (batches: 0, sequences: 0, largest: 0)

    public init(limits: Limits, runner: @escaping Runner) {
        self.limits = limits
        self.runner = runner
    }

    /// Starts the worker thread.
    public func start() {
        let t = Thread { [self] in work() }
        t.name = "pando-serve-inference"
        t.stackSize = 8 << 20
        condition.lock()
        thread = t
        condition.unlock()
        t.start()
    }

    /// Sequences waiting now.
    public var waiting: Int { condition.withLock { waitingSequences } }

    /// (batches run, sequences run, largest batch in sequences) so far.
    public var statistics: (batches: Int, sequences: Int, largest: Int) { condition.withLock { counters } }

    /// Queues `sequences` (at least one) and waits for their outputs, in order.
    public func submit(_ kind: Kind, _ sequences: [[Int32]]) async throws -> [[Float]] {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<[[Float]], Error>) in
            let job = Job(kind: kind, sequences: sequences, tokens: sequences.reduce(0) { $0 + $1.count },
                          answer: { continuation.resume(with: $0) })
            condition.lock()
            if stopping {
                condition.unlock()
                continuation.resume(throwing: QueueError.stopped)
                return
            }
            // An empty queue always takes a job (however large), so no request is refused forever.
            if waitingSequences > 0, waitingSequences + sequences.count > limits.capacity {
                condition.unlock()
                continuation.resume(throwing: QueueError.full)
                return
            }
            pending.append(job)
            waitingSequences += sequences.count
            condition.signal()
            condition.unlock()
        }
    }

    /// Refuses new jobs, lets the worker finish the queued ones, and waits until it has.
    public func stop() {
        condition.lock()
        stopping = true
        condition.broadcast()
        let started = thread != nil
        while started && !finished { condition.wait() }
        condition.unlock()
    }

    private func work() {
        while let batch = nextBatch() {
            let kind = batch[0].kind
            let sequences = batch.flatMap(\.sequences)
            let result = Result { try runner(kind, sequences) }
            condition.withLock {
                counters.batches += 1
                counters.sequences += sequences.count
                counters.largest = max(counters.largest, sequences.count)
            }
            var offset = 0
            for job in batch {
                let n = job.sequences.count
                switch result {
                case .success(let outputs) where outputs.count == sequences.count:
                    job.answer(.success(Array(outputs[offset..<offset + n])))
                case .success:
                    job.answer(.failure(ServeError("the model returned the wrong number of outputs")))
                case .failure(let error):
                    job.answer(.failure(error))
                }
                offset += n
            }
        }
        condition.withLock {
            finished = true
            condition.broadcast()
        }
    }

    /// Waits for a first job, then gathers until the batch is full or `maxWait` has passed;
    /// takes the oldest jobs of the first job's kind that fit. Nil once stopped and drained.
    private func nextBatch() -> [Job]? {
        condition.lock()
        defer { condition.unlock() }
        while head == pending.count {
            if stopping { return nil }
            condition.wait()
        }
        let deadline = Date().addingTimeInterval(limits.maxWait)
        while !stopping, !full(), condition.wait(until: deadline) {}
        let kind = pending[head].kind
        var taken: [Job] = [pending[head]]
        var sequences = pending[head].sequences.count, tokens = pending[head].tokens
        head += 1
        while head < pending.count, pending[head].kind == kind,
              sequences + pending[head].sequences.count <= limits.maxBatchSequences,
              tokens + pending[head].tokens <= limits.maxBatchTokens {
            sequences += pending[head].sequences.count
            tokens += pending[head].tokens
            taken.append(pending[head])
            head += 1
        }
        waitingSequences -= sequences
        if head > 1024 || head == pending.count {
            pending.removeFirst(head)
            head = 0
        }
        return taken
    }

    /// Whether the waiting jobs already fill a batch (lock held).
    private func full() -> Bool {
        var sequences = 0, tokens = 0
        for job in pending[head...] {
            sequences += job.sequences.count
            tokens += job.tokens
            if sequences >= limits.maxBatchSequences || tokens >= limits.maxBatchTokens { return true }
        }
        return false
    }
}

/// A problem serving a request or starting the server; the message names the cause.
public struct ServeError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
