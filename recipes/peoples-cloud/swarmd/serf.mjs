// Serf's RPC protocol (msgpack over TCP on 127.0.0.1:7373): the agent's event handlers run
// through /bin/sh, which an appliance does not have, so the daemon talks to Serf here.
// Every request is a header {Command, Seq} plus an optional body; every response a header
// {Seq, Error} plus, for some commands, a body. stream and query answer first with a bare
// header (the ack) and then with header + body records until stopped or done.
import net from 'node:net'
import { encode, decodeMultiStream } from '@msgpack/msgpack'

const WITH_BODY = new Set(['members', 'members-filtered', 'join', 'stats', 'get-coordinate'])
const STREAMING = new Set(['stream', 'query', 'monitor'])

export class SerfClient {
  constructor ({ host = '127.0.0.1', port = 7373, authKey = '' } = {}) {
    this.host = host
    this.port = port
    this.authKey = authKey
    this.seq = 0
    this.pending = new Map() // seq -> { command, resolve, reject, acked, onRecord }
    this.socket = null
    this.closed = false
  }

  async connect () {
    this.socket = await new Promise((resolve, reject) => {
      const socket = net.createConnection({ host: this.host, port: this.port })
      socket.once('connect', () => resolve(socket))
      socket.once('error', reject)
    })
    this.socket.on('error', () => {})
    this.socket.on('close', () => this._fail(new Error('serf RPC connection closed')))
    this._read()
    await this.request('handshake', { Version: 1 })
    if (this.authKey) await this.request('auth', { AuthKey: this.authKey })
    return this
  }

  close () {
    this.closed = true
    if (this.socket) this.socket.destroy()
  }

  async _read () {
    let waitingBody = null
    try {
      for await (const item of decodeMultiStream(this.socket, { useBigInt64: false })) {
        if (waitingBody !== null) {
          const entry = waitingBody
          waitingBody = null
          this._deliver(entry, item)
          continue
        }
        const entry = this.pending.get(item.Seq)
        if (!entry) continue
        if (item.Error) {
          if (WITH_BODY.has(entry.command)) waitingBody = { ...entry, error: item.Error }
          else this._settle(item.Seq, entry, new Error(`serf ${entry.command}: ${item.Error}`))
          continue
        }
        if (WITH_BODY.has(entry.command) || (STREAMING.has(entry.command) && entry.acked)) {
          waitingBody = { ...entry, seq: item.Seq }
          continue
        }
        if (STREAMING.has(entry.command)) {
          entry.acked = true
          entry.resolve(item.Seq)
        } else {
          this._settle(item.Seq, entry, null, item)
        }
      }
    } catch (err) {
      this._fail(err)
    }
  }

  _deliver (entry, body) {
    if (entry.error) {
      this._settle(entry.seq, entry, new Error(`serf ${entry.command}: ${entry.error}`))
    } else if (STREAMING.has(entry.command)) {
      entry.onRecord(body)
      if (entry.command === 'query' && body.Type === 'done') this.pending.delete(entry.seq)
    } else {
      this._settle(entry.seq, entry, null, body)
    }
  }

  _settle (seq, entry, err, value) {
    this.pending.delete(seq)
    if (err) entry.reject(err)
    else entry.resolve(value)
  }

  _fail (err) {
    for (const entry of this.pending.values()) {
      if (entry.onRecord) entry.onRecord({ Type: 'closed', error: err.message })
      if (!entry.acked) entry.reject(err)
    }
    this.pending.clear()
    if (this.onclose && !this.closed) {
      this.closed = true
      this.onclose(err)
    }
  }

  request (command, body, onRecord) {
    const seq = this.seq++
    return new Promise((resolve, reject) => {
      this.pending.set(seq, { command, seq, resolve, reject, acked: false, onRecord })
      const header = encode({ Command: command, Seq: seq })
      this.socket.write(body === undefined ? header : Buffer.concat([header, encode(body)]))
    })
  }

  async members () {
    return (await this.request('members')).Members.map(memberOf)
  }

  join (addresses, replay = false) {
    return this.request('join', { Existing: addresses, Replay: replay })
  }

  tags (tags, remove = []) {
    return this.request('tags', { Tags: tags, DeleteTags: remove })
  }

  event (name, payload, coalesce = false) {
    return this.request('event', { Name: name, Payload: Buffer.from(payload), Coalesce: coalesce })
  }

  respond (id, payload) {
    return this.request('respond', { ID: id, Payload: Buffer.from(payload) })
  }

  // events: "member-join,member-leave,member-failed,user,query" and the like
  stream (types, onEvent) {
    return this.request('stream', { Type: types }, (record) => onEvent(normalise(record)))
  }

  // Resolves with [{from, payload}] when Serf says the query is done (its timeout).
  query (name, payload, { timeoutMs = 3000 } = {}) {
    return new Promise((resolve, reject) => {
      const answers = []
      this.request(
        'query',
        {
          FilterNodes: [],
          FilterTags: {},
          RequestAck: false,
          Timeout: timeoutMs * 1e6,
          Name: name,
          Payload: Buffer.from(payload)
        },
        (record) => {
          if (record.Type === 'response') {
            answers.push({ from: record.From, payload: Buffer.from(record.Payload || []).toString() })
          } else if (record.Type === 'done' || record.Type === 'closed') {
            resolve(answers)
          }
        }
      ).catch(reject)
    })
  }
}

export function memberOf (m) {
  const addr = Buffer.from(m.Addr || [])
  let address = ''
  if (addr.length === 4) address = [...addr].join('.')
  else if (addr.length === 16 && addr.subarray(0, 12).equals(Buffer.from([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 255, 255]))) address = [...addr.subarray(12)].join('.')
  else if (addr.length === 16) address = addr.toString('hex').match(/.{4}/g).join(':')
  return { name: m.Name, address, port: m.Port, tags: m.Tags || {}, status: m.Status }
}

function normalise (record) {
  if (record.Members) record.Members = record.Members.map(memberOf)
  if (record.Payload) record.Payload = Buffer.from(record.Payload).toString()
  return record
}
