// k6 load test of the HTTP door: an earn/redeem/balance mix over many
// enrollments. Run by loadtests/run-http (which starts the engine and the
// do-nothing responder); can also be run by hand:
//
//   k6 run -e BASE_URL=http://127.0.0.1:8080 -e OPERATOR_TOKEN=... loadtests/k6/http.js
//
// Environment:
//   BASE_URL        target (engine or the do-nothing responder)
//   OPERATOR_TOKEN  creates a business and its enrollments in setup();
//                   without it (the do-nothing responder) fixed ids are used
//   ENROLLMENTS_FILE, API_KEY
//                   enrollments written beforehand (one id per line) and
//                   their business's API key, instead of creating them
//                   (loadtests/run-http writes ten thousand that way); the
//                   mixed load first gives each a starting balance. A
//                   relative path is taken from this script's folder.
//   SCENARIO        closed (default: VUS requests in flight), constant
//                   (constant arrival RATE/s), ramping (arrival rate ramping
//                   up to RATE/s and back)
//   VUS, RATE, DURATION, ENROLLMENTS, MIX (earn-only | mixed)
//   PICK            random (default: each request picks an enrollment at
//                   random) or walk (requests take the enrollments in turn
//                   from a random one on, so a round of as many requests
//                   reaches every one: the warm-up's rounds)
import http from 'k6/http';
import exec from 'k6/execution';
import { check } from 'k6';
import { SharedArray } from 'k6/data';

const BASE = __ENV.BASE_URL || 'http://127.0.0.1:8080';
const VUS = parseInt(__ENV.VUS || '64');
const RATE = parseInt(__ENV.RATE || '2000');
const DURATION = __ENV.DURATION || '20s';
const ENROLLMENTS = parseInt(__ENV.ENROLLMENTS || '500');
const MIX = __ENV.MIX || 'mixed';
const PICK = __ENV.PICK || 'random';
if (PICK !== 'random' && PICK !== 'walk') throw new Error(`PICK is random or walk, not ${PICK}`);
// Read in the init context, as k6 requires of files, once for all VUs.
const GIVEN_IDS = __ENV.ENROLLMENTS_FILE
  ? new SharedArray('enrollments', () => open(__ENV.ENROLLMENTS_FILE)
    .split('\n').map((l) => l.trim()).filter((l) => l.length > 0))
  : null;
// Seed requests sent at once by setup() for given enrollments.
const SEED_BATCH = 100;

const scenarios = {
  closed: { executor: 'constant-vus', vus: VUS, duration: DURATION },
  constant: {
    executor: 'constant-arrival-rate', rate: RATE, timeUnit: '1s', duration: DURATION,
    preAllocatedVUs: VUS, maxVUs: VUS * 4,
  },
  ramping: {
    executor: 'ramping-arrival-rate', startRate: Math.floor(RATE / 10), timeUnit: '1s',
    preAllocatedVUs: VUS, maxVUs: VUS * 4,
    stages: [
      { target: RATE, duration: '10s' },
      { target: RATE, duration: DURATION },
      { target: Math.floor(RATE / 10), duration: '5s' },
    ],
  },
};

export const options = {
  scenarios: { load: scenarios[__ENV.SCENARIO || 'closed'] },
  thresholds: {
    'http_req_duration{op:earn}': ['p(99)<5'],
    'http_req_failed': ['rate<0.001'],
    'checks': ['rate>0.999'],
  },
  summaryTrendStats: ['avg', 'med', 'p(90)', 'p(99)', 'max'],
  discardResponseBodies: false,
};

const JSON_HEADERS = { 'Content-Type': 'application/json' };

export function setup() {
  // Where a walk starts, so rounds that end early do not all warm the same ones.
  return Object.assign(prepare(), { start: Math.floor(Math.random() * 1e9) });
}

function prepare() {
  if (GIVEN_IDS) {
    const key = __ENV.API_KEY;
    if (!key) throw new Error('ENROLLMENTS_FILE needs API_KEY');
    if (GIVEN_IDS.length === 0) throw new Error('ENROLLMENTS_FILE holds no ids');
    if (MIX !== 'earn-only') {
      // A starting balance so redeems mostly succeed.
      const params = { headers: Object.assign({ Authorization: `Bearer ${key}` }, JSON_HEADERS) };
      for (let i = 0; i < GIVEN_IDS.length; i += SEED_BATCH) {
        const requests = [];
        for (let j = i; j < Math.min(i + SEED_BATCH, GIVEN_IDS.length); j++) {
          requests.push(['POST', `${BASE}/v1/enrollments/${GIVEN_IDS[j]}/earn`,
            JSON.stringify({ points: 100000, idempotencyKey: `seed-${j}` }), params]);
        }
        for (const res of http.batch(requests)) {
          if (res.status !== 200) throw new Error(`seeding a balance: ${res.status} ${res.body}`);
        }
      }
    }
    // The ids stay in the shared array rather than being copied to every VU.
    return { key, enrollments: null };
  }
  const operator = __ENV.OPERATOR_TOKEN;
  if (!operator) {
    // The do-nothing responder keeps no state: any ids will do.
    const ids = [];
    for (let i = 0; i < ENROLLMENTS; i++) ids.push(`0190d6a1-2b3c-7d4e-8f90-${String(i).padStart(12, '0')}`);
    return { key: 'none', enrollments: ids };
  }
  const auth = (token) => ({ headers: Object.assign({ Authorization: `Bearer ${token}` }, JSON_HEADERS) });
  const business = http.post(`${BASE}/v1/businesses`, JSON.stringify({ name: 'k6' }), auth(operator)).json();
  const key = business.apiKey;
  const program = http.post(`${BASE}/v1/programs`, JSON.stringify({
    name: 'k6', earnRule: { pointsPerUnit: 10 },
    tiers: [{ name: 'member', minPoints: 0 }, { name: 'gold', minPoints: 100000 }],
  }), auth(key)).json();
  http.post(`${BASE}/v1/programs/${program.programId}/activate`, null, auth(key));
  const enrollments = [];
  for (let i = 0; i < ENROLLMENTS; i++) {
    const customer = http.post(`${BASE}/v1/customers`, JSON.stringify({ externalId: `k6-${i}` }), auth(key)).json();
    const enrollment = http.post(`${BASE}/v1/enrollments`,
      JSON.stringify({ customerId: customer.customerId, programId: program.programId }), auth(key)).json();
    enrollments.push(enrollment.enrollmentId);
    // A starting balance so redeems mostly succeed.
    http.post(`${BASE}/v1/enrollments/${enrollment.enrollmentId}/earn`,
      JSON.stringify({ points: 100000, idempotencyKey: `seed-${i}` }), auth(key));
  }
  return { key, enrollments };
}

export default function (data) {
  const ids = GIVEN_IDS || data.enrollments;
  const at = PICK === 'walk'
    ? (data.start + exec.scenario.iterationInTest) % ids.length
    : Math.floor(Math.random() * ids.length);
  const id = ids[at];
  const params = (op) => ({ headers: Object.assign({ Authorization: `Bearer ${data.key}` }, JSON_HEADERS), tags: { op } });
  const key = `${__VU}-${__ITER}-${Math.random().toString(36).slice(2)}`;
  const roll = MIX === 'earn-only' ? 0 : Math.random();
  let res;
  if (roll < 0.6) {
    res = http.post(`${BASE}/v1/enrollments/${id}/earn`, JSON.stringify({ amount: 1250, idempotencyKey: key }), params('earn'));
    check(res, { 'earn 200': (r) => r.status === 200 });
  } else if (roll < 0.8) {
    res = http.post(`${BASE}/v1/enrollments/${id}/redeem`, JSON.stringify({ points: 5, idempotencyKey: key }), params('redeem'));
    check(res, { 'redeem 200': (r) => r.status === 200 });
  } else {
    res = http.get(`${BASE}/v1/enrollments/${id}`, params('balance'));
    check(res, { 'balance 200': (r) => r.status === 200 });
  }
}
