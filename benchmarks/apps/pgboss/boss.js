// What the benchmark's pg-boss scripts share: a PgBoss built the way pg-boss's README builds one,
// and the clock every timestamp of the suite is read from.
import { PgBoss } from 'pg-boss'

// The suite's database (a URL) comes in BENCH_DSN, as it does for the Python workers.
export function createBoss (options = {}) {
  const dsn = process.env.BENCH_DSN
  if (!dsn) throw new Error('BENCH_DSN is not set')
  const boss = new PgBoss({
    connectionString: dsn,
    // The runner finds a worker's connections by their application_name (PGAPPNAME); pg-boss
    // would otherwise name them all 'pgboss'.
    ...(process.env.PGAPPNAME ? { application_name: process.env.PGAPPNAME } : {}),
    ...options
  })
  // An 'error' event nobody listens to would throw: log it, as the README does.
  boss.on('error', error => console.error('pg-boss error:', error))
  boss.on('warning', warning => console.error('pg-boss warning:', warning.message))
  return boss
}

// Epoch seconds with sub-millisecond resolution (Date.now() has whole milliseconds only), the
// counterpart of Python's time.time(): W4 subtracts one process's reading from another's.
export function epochSeconds () {
  return (performance.timeOrigin + performance.now()) / 1000
}
