// A pg-boss worker process as its users run one: start(), work() on the benchmark queue with a
// no-op handler, stop() on SIGTERM.
//
//   node worker.js QUEUE [--OPTION VALUE ...]
//
// Each option is a pg-boss option given as an integer (0/1 for the booleans); an option left out
// keeps pg-boss's default. The handler does what every handler of the suite does (probe.py): it
// notes when the first job started (BENCH_FIRST_FILE) and, for W4, each job's send-to-start
// latency (BENCH_LATENCY_FILE).
import { appendFileSync, renameSync, writeFileSync } from 'node:fs'
import { createBoss, epochSeconds } from './boss.js'

// Where each option goes: the constructor or work(), and how its integer is read.
const OPTIONS = {
  useListenNotify: ['constructor', Boolean],
  batchSize: ['work', Number],
  localConcurrency: ['work', Number],
  burstWhenBatchFull: ['work', Boolean]
}

const [queue, ...rest] = process.argv.slice(2)
const constructorOptions = {}
const workOptions = {}
for (let i = 0; i < rest.length; i += 2) {
  const name = rest[i].replace(/^--/, '')
  if (!(name in OPTIONS) || rest[i + 1] === undefined) throw new Error(`bad option: ${rest[i]}`)
  const [where, read] = OPTIONS[name]
  const target = where === 'constructor' ? constructorOptions : workOptions
  target[name] = read(Number.parseInt(rest[i + 1], 10))
}

let firstPath = process.env.BENCH_FIRST_FILE
const latencyPath = process.env.BENCH_LATENCY_FILE

function started (sentAt) {
  if (firstPath) {
    writeFileSync(`${firstPath}.tmp`, `${epochSeconds().toFixed(6)}\n`)
    renameSync(`${firstPath}.tmp`, firstPath) // the runner never reads half a line
    firstPath = undefined
  }
  if (sentAt !== undefined && latencyPath) {
    appendFileSync(latencyPath, `${(epochSeconds() - sentAt).toFixed(6)}\n`)
  }
}

const boss = createBoss(constructorOptions)
await boss.start()

let stopping = false
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => {
    if (stopping) return
    stopping = true
    // Graceful: waits for the batch in hand, completes it, closes the pool.
    boss.stop().then(
      () => process.exit(0),
      error => { console.error(error); process.exit(1) }
    )
  })
}

// pg-boss hands the handler a batch (batchSize jobs at most) and completes the batch when the
// returned promise resolves.
await boss.work(queue, workOptions, async jobs => {
  for (const job of jobs) started(job.data?.t)
})
