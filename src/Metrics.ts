/**
 * Operational metrics: kept with Effect's `Metric` in this process, and served
 * at `GET /metrics` in Prometheus's text format, with the process's own
 * figures (memory, CPU time) read when scraped.
 *
 * Each instance counts its own work; a Prometheus server scraping every
 * instance adds them up. Labels have few values: a route is its pattern
 * (`/api/v1/conversations/:id`), never a path with ids in it.
 */
import { Metric, MetricBoundaries, MetricLabel, type MetricPair, MetricState, Option } from "effect"

/** Request durations: from 1 ms up to about 16 s. */
const durationBuckets = MetricBoundaries.exponential({ start: 0.001, factor: 2, count: 15 })

export const httpRequests = Metric.counter("webplus_http_requests_total", {
  description: "HTTP requests answered, by method, route and status (499: the client left first)",
  incremental: true
})

export const httpRequestDuration = Metric.histogram(
  "webplus_http_request_duration_seconds",
  durationBuckets,
  "Time to answer an HTTP request (for a stream, until it ended), by method and route"
)

export const chatAnswersStarted = Metric.counter("webplus_chat_answers_started_total", {
  description: "Answers started (question stored, provider called)",
  incremental: true
})

export const chatAnswersEnded = Metric.counter("webplus_chat_answers_ended_total", {
  description: "Answers ended, by status: complete, cancelled, error (the provider failed), incomplete (shutdown)",
  incremental: true
})

export const chatAnswersStreaming = Metric.gauge("webplus_chat_answers_streaming", {
  description: "Answers this instance is writing now"
})

export const chatFirstToken = Metric.histogram(
  "webplus_chat_first_token_seconds",
  durationBuckets,
  "Time from an answer's start (its question stored) to the provider's first token"
)

export const chatTokens = Metric.counter("webplus_chat_tokens_total", {
  description: "Tokens of chat answers as the providers reported them, by kind: prompt or completion",
  incremental: true
})

export const jobsRun = Metric.counter("webplus_jobs_total", {
  description: "Background jobs this instance ran, by queue and outcome: done, retried (failed, offered again), " +
    "given up (failed its last attempt)",
  incremental: true
})

export const jobDuration = Metric.histogram(
  "webplus_job_duration_seconds",
  durationBuckets,
  "Time a background job's handler took, by queue"
)

const labelSets = new Map<string, ReadonlyArray<MetricLabel.MetricLabel>>()

/**
 * Labels for `Metric.unsafeUpdate`, as the same array for the same labels: Effect keeps a labelled
 * metric's state by that array, so an update with it finds the state at once (a new array makes it
 * build and hash the labelled key again). The label values must be few (a route pattern, not a path).
 */
export const labels = (...pairs: ReadonlyArray<readonly [string, string]>): ReadonlyArray<MetricLabel.MetricLabel> => {
  const key = pairs.map(([name, value]) => `${name}\u0000${value}`).join("\u0001")
  const existing = labelSets.get(key)
  if (existing !== undefined) return existing
  const created = pairs.map(([name, value]) => MetricLabel.make(name, value))
  labelSets.set(key, created)
  return created
}

// --- the text format (https://prometheus.io/docs/instrumenting/exposition_formats/)

const metricName = (name: string) => name.replace(/[^a-zA-Z0-9_:]/g, "_").replace(/^([0-9])/, "_$1")

const labelValue = (value: string) => value.replace(/\\/g, "\\\\").replace(/\n/g, "\\n").replace(/"/g, "\\\"")

const labelSet = (labels: ReadonlyArray<readonly [string, string]>) =>
  labels.length === 0
    ? ""
    : `{${labels.map(([key, value]) => `${metricName(key)}="${labelValue(value)}"`).join(",")}}`

const numberText = (value: number | bigint) =>
  typeof value === "bigint"
    ? value.toString()
    : Number.isNaN(value)
    ? "NaN"
    : value === Infinity
    ? "+Inf"
    : value === -Infinity
    ? "-Inf"
    : String(value)

interface Family {
  readonly type: "counter" | "gauge" | "histogram"
  readonly help: string
  readonly lines: Array<string>
}

/** A figure read when the metrics are scraped, rather than kept as a `Metric`. */
export interface Figure {
  readonly name: string
  readonly type: "counter" | "gauge"
  readonly help: string
  readonly labels?: ReadonlyArray<readonly [string, string]>
  readonly value: number
}

/**
 * Metrics in Prometheus's text format: counters, gauges and histograms (others are left out), one
 * family per name with its `HELP` and `TYPE`, then `extra` (figures read at the time, as gauges or
 * counters).
 */
export const prometheusText = (
  pairs: ReadonlyArray<MetricPair.MetricPair.Untyped>,
  extra: ReadonlyArray<Figure> = []
): string => {
  const families = new Map<string, Family>()
  const family = (name: string, type: Family["type"], help: string) => {
    const existing = families.get(name)
    if (existing !== undefined) return existing.type === type ? existing : null
    const created: Family = { type, help, lines: [] }
    families.set(name, created)
    return created
  }
  // Series in a stable order; a histogram's buckets stay in the order of their bounds, as the format requires.
  const series = pairs
    .map((pair) => {
      const labels = pair.metricKey.tags.map((tag) => [tag.key, tag.value] as const)
      const labelText = labelSet(labels)
      return { ...pair, labels, labelText, sortKey: `${pair.metricKey.name}${labelText}` }
    })
    .sort((a, b) => a.sortKey < b.sortKey ? -1 : a.sortKey > b.sortKey ? 1 : 0)
  for (const { labelText, labels, metricKey, metricState } of series) {
    const name = metricName(metricKey.name)
    const help = Option.getOrElse(metricKey.description, () => "")
    if (MetricState.isCounterState(metricState)) {
      family(name, "counter", help)?.lines.push(`${name}${labelText} ${numberText(metricState.count)}`)
    } else if (MetricState.isGaugeState(metricState)) {
      family(name, "gauge", help)?.lines.push(`${name}${labelText} ${numberText(metricState.value)}`)
    } else if (MetricState.isHistogramState(metricState)) {
      const lines = family(name, "histogram", help)?.lines
      if (lines === undefined) continue
      // Effect's buckets are cumulative already, as Prometheus's are.
      for (const [boundary, count] of metricState.buckets) {
        if (boundary === Infinity) continue
        lines.push(`${name}_bucket${labelSet([...labels, ["le", numberText(boundary)]])} ${count}`)
      }
      lines.push(`${name}_bucket${labelSet([...labels, ["le", "+Inf"]])} ${metricState.count}`)
      lines.push(`${name}_sum${labelText} ${numberText(metricState.sum)}`)
      lines.push(`${name}_count${labelText} ${metricState.count}`)
    }
  }
  for (const { help, labels = [], name, type, value } of extra) {
    family(metricName(name), type, help)?.lines.push(`${metricName(name)}${labelSet(labels)} ${numberText(value)}`)
  }
  const text: Array<string> = []
  for (const [name, { help, lines, type }] of [...families].sort(([a], [b]) => a.localeCompare(b))) {
    if (help.length > 0) text.push(`# HELP ${name} ${help.replace(/\\/g, "\\\\").replace(/\n/g, "\\n")}`)
    text.push(`# TYPE ${name} ${type}`)
    text.push(...lines)
  }
  return text.length === 0 ? "" : `${text.join("\n")}\n`
}

/**
 * `webplus_jobs_waiting`: the jobs of each queue offered and not yet taken, read from the queues'
 * store when scraped. The store is shared, so every instance reports the same figure.
 */
export const jobsWaiting = (depths: ReadonlyArray<{ readonly queue: string; readonly waiting: number }>) =>
  depths.map(({ queue, waiting }): Figure => ({
    name: "webplus_jobs_waiting",
    type: "gauge",
    help: "Background jobs offered and not yet taken by a worker, by queue (the shared queue's figure, " +
      "the same from every instance)",
    labels: [["queue", queue]],
    value: waiting
  }))

const startedAt = Date.now() / 1000 - process.uptime()

/** The process's own figures, read now. */
export const processFigures = () => {
  const memory = process.memoryUsage()
  const cpu = process.cpuUsage()
  return [
    {
      name: "process_cpu_seconds_total",
      type: "counter",
      help: "User and system CPU time spent, in seconds",
      value: (cpu.user + cpu.system) / 1e6
    },
    { name: "process_resident_memory_bytes", type: "gauge", help: "Resident memory size", value: memory.rss },
    {
      name: "process_start_time_seconds",
      type: "gauge",
      help: "Start time of the process since the Unix epoch, in seconds",
      value: Math.round(startedAt)
    },
    { name: "nodejs_heap_used_bytes", type: "gauge", help: "V8 heap in use", value: memory.heapUsed },
    { name: "nodejs_heap_total_bytes", type: "gauge", help: "V8 heap reserved", value: memory.heapTotal },
    {
      name: "nodejs_external_memory_bytes",
      type: "gauge",
      help: "Memory of buffers and other objects outside the V8 heap",
      value: memory.external
    }
  ] as const
}
