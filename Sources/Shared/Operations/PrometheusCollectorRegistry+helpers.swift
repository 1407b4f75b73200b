import Server
import Prometheus

extension PrometheusCollectorRegistry {
    /// The counter `name` with these labels (created on first use, the same one after).
    public func counter(_ name: String, labels: [(String, String)] = [], help: String) -> Counter {
        makeCounter(descriptor: Self.descriptor(name, help), labels: labels)
    }

    public func gauge(_ name: String, labels: [(String, String)] = [], help: String) -> Gauge {
        makeGauge(descriptor: Self.descriptor(name, help), labels: labels)
    }

    public func histogram(_ name: String, labels: [(String, String)] = [], buckets: [Duration], help: String)
        -> DurationHistogram
    {
        makeDurationHistogram(descriptor: Self.descriptor(name, help), labels: labels, buckets: buckets)
    }

    private static func descriptor(_ name: String, _ help: String) -> MetricNameDescriptor {
        MetricNameDescriptor(metricName: name, unitName: "", helpText: help)
    }
}
