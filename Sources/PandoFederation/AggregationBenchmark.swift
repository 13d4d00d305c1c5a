import Dispatch
import Foundation
import PandoEngine
import PandoTraining

/// Measures streaming FedAvg: deltas arrive one at a time into a receive
/// buffer (as they would from the network) and are folded into the
/// accumulator; its throughput is compared with a plain copy of the same
/// bytes, and resident memory is sampled after the first and the last school
/// to show it does not grow with the number of schools.
public enum AggregationBenchmark {
    public struct Report: Codable, Sendable {
        public var schools: Int
        public var parameters: Int
        public var bytesPerDelta: Int
        /// Delta bytes folded per second.
        public var aggregateGBPerSecond: Double
        /// The same bytes copied by `memcpy`, per second.
        public var copyGBPerSecond: Double
        public var seconds: Double
        public var residentMegabytesAfterFirst: Double
        public var residentMegabytesAfterLast: Double
        public var accumulatorBytes: Int

        public var table: String {
            """
            aggregate: FedAvg over \(schools) deltas of \(parameters) parameters (\(String(format: "%.1f", Double(bytesPerDelta) / 1e6)) MB each), \(Parallel.workers) threads
              aggregation         \(String(format: "%8.2f", aggregateGBPerSecond)) GB/s   (\(String(format: "%.2f", seconds)) s)
              memcpy, same bytes  \(String(format: "%8.2f", copyGBPerSecond)) GB/s   (aggregation takes \(String(format: "%.2f", copyGBPerSecond / aggregateGBPerSecond))× the copy's time)
              resident memory     \(String(format: "%8.0f", residentMegabytesAfterFirst)) MB after the first school, \(String(format: "%.0f", residentMegabytesAfterLast)) MB after the last
              accumulator         \(String(format: "%8.1f", Double(accumulatorBytes) / 1e6)) MB, one model-sized buffer
            """
        }
    }

    public static func run(layout: ParameterLayout, schools: Int) -> Report {
        let incoming = ParameterBuffer(layout: layout)
        let copyTarget = ParameterBuffer(layout: layout)
        let accumulator = DeltaAccumulator(layout: layout)
        let n = layout.count
        var aggregateSeconds = 0.0, copySeconds = 0.0
        var afterFirst = 0.0
        for school in 0..<schools {
            // "Receive" a delta: fill the buffer with this school's values (untimed).
            let key = CounterRandom.key(UInt64(school), 17)
            let p = incoming.buffer.base
            Parallel.forRanges(n, minimumChunk: 1 << 16) { range in
                for i in range { p[i] = 1e-3 * (CounterRandom.uniform(key, i) - 0.5) }
            }
            var start = DispatchTime.now().uptimeNanoseconds
            accumulator.add(incoming, weight: 100 + school)
            aggregateSeconds += Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
            start = DispatchTime.now().uptimeNanoseconds
            memcpy(copyTarget.buffer.base, incoming.buffer.base, 4 * n)
            copySeconds += Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
            if school == 0 { afterFirst = residentMegabytes() }
        }
        _ = accumulator.finish()
        let bytes = Double(4 * n * schools)
        return Report(
            schools: schools, parameters: n, bytesPerDelta: 4 * n,
            aggregateGBPerSecond: bytes / aggregateSeconds / 1e9, copyGBPerSecond: bytes / copySeconds / 1e9,
            seconds: aggregateSeconds, residentMegabytesAfterFirst: afterFirst, residentMegabytesAfterLast: residentMegabytes(),
            accumulatorBytes: accumulator.allocatedBytes)
    }

    /// Current resident set size, from /proc (Linux).
    static func residentMegabytes() -> Double {
        guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return 0 }
        for line in status.split(separator: "\n") where line.hasPrefix("VmRSS:") {
            return (line.split(whereSeparator: { $0 == " " || $0 == "\t" }).dropFirst().first.flatMap { Double($0) } ?? 0) / 1024
        }
        return 0
    }
}
