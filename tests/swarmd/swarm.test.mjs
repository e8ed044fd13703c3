// node --test: the swarm daemon's decisions (recipes/peoples-cloud/swarmd/swarm.mjs).
import { test } from 'node:test'
import assert from 'node:assert/strict'
import {
  chooseHolders, decide, holdingsPayload, mergeHoldings, deploymentList, rank
} from '../../recipes/peoples-cloud/swarmd/swarm.mjs'

const MIB = 1024 * 1024
const deployment = { cid: 'bafyexample', name: 'site', size: 5 * MIB, r: 2 }
const nodes = (...names) => names.map((name) => ({ name, free: 100 * MIB }))

function view (self, overrides = {}) {
  return {
    self,
    alive: nodes('a', 'b', 'c'),
    catalog: new Map([[deployment.cid, deployment]]),
    holders: new Map([[deployment.cid, new Set(['a'])]]),
    mine: new Set(self === 'a' ? [deployment.cid] : []),
    pinning: new Set(),
    gone: new Set(),
    ...overrides
  }
}

test('exactly one more node pins to reach R = 2, and every node agrees which', () => {
  const decisions = ['a', 'b', 'c'].map((self) => decide(view(self)).pin.map((d) => d.cid))
  const pinners = ['a', 'b', 'c'].filter((_, i) => decisions[i].length)
  assert.equal(pinners.length, 1)
  const best = ['b', 'c'].sort((x, y) => (rank(deployment.cid, x) < rank(deployment.cid, y) ? -1 : 1))[0]
  assert.deepEqual(pinners, [best])
})

test('a failed holder is not counted: the survivors restore R', () => {
  const holders = new Map([[deployment.cid, new Set(['a', 'b'])]])
  const alive = nodes('a', 'c') // b failed
  assert.deepEqual(decide(view('c', { holders, alive })).pin, [deployment])
  assert.deepEqual(decide(view('c', { holders, alive: nodes('a', 'b', 'c') })).pin, [])
})

test('nodes without free quota are passed over', () => {
  const alive = [{ name: 'a', free: 0 }, { name: 'b', free: MIB }, { name: 'c', free: 10 * MIB }]
  assert.deepEqual(chooseHolders(deployment, new Set(['a']), alive), ['c'])
  assert.deepEqual(chooseHolders(deployment, new Set(), [{ name: 'b', free: MIB }]), [])
})

test('a node that comes back keeps its pins (R is a floor, not a ceiling)', () => {
  const holders = new Map([[deployment.cid, new Set(['a', 'b', 'c'])]])
  const result = decide(view('b', { holders, mine: new Set([deployment.cid]) }))
  assert.deepEqual(result, { pin: [], unpin: [] })
})

test('an unpinned deployment is dropped and never pinned again', () => {
  const gone = new Set([deployment.cid])
  assert.deepEqual(decide(view('a', { gone })).unpin, [deployment.cid])
  assert.deepEqual(decide(view('b', { gone })).pin, [])
})

test('a node already pinning does not start again', () => {
  assert.deepEqual(decide(view('b', { pinning: new Set([deployment.cid]) })).pin, [])
})

test('holdings answers merge into holders and teach the catalog', () => {
  const catalog = new Map()
  const gone = new Set()
  const answers = [
    { from: 'a', payload: holdingsPayload('a', new Map([[deployment.cid, deployment]]), new Set()) },
    { from: 'b', payload: holdingsPayload('b', new Map([[deployment.cid, deployment]]), new Set(['bafyold'])) },
    { from: 'c', payload: 'not json' }
  ]
  const holders = mergeHoldings(answers, catalog, gone)
  assert.deepEqual([...holders.get(deployment.cid)].sort(), ['a', 'b'])
  assert.deepEqual(catalog.get(deployment.cid), deployment)
  assert.ok(gone.has('bafyold'))
  const list = deploymentList(catalog, holders, gone, new Set(['a', 'c']))
  assert.deepEqual(list, [{ ...deployment, holders: ['a'], replicas: 1 }])
})

test('a holdings answer stays within the size limit', () => {
  const many = new Map()
  for (let i = 0; i < 500; i++) many.set(`bafy${i}`.padEnd(59, 'x'), { ...deployment, cid: `bafy${i}` })
  const text = holdingsPayload('a', many, new Set(), 1000)
  assert.ok(text.length <= 1000)
  assert.equal(JSON.parse(text).t, true)
})
