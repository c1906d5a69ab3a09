// Writes the beacon deposit contract and the EIP-4788 / EIP-7002 / EIP-7251 system
// contracts (code, storage, nonce) from the Hoodi genesis to a JSON file that
// services/chain/devnet.py loads into anvil, which predeploys none of them.
//
// Usage: node export-system-contracts.mjs [out.json]   (default: build/system-contracts.json)
import { mkdirSync, writeFileSync } from 'node:fs'
import { dirname, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

import { hoodiGenesis } from '@ethereumjs/genesis/hoodi'

const here = dirname(fileURLToPath(import.meta.url))
const out = resolve(process.argv[2] ?? `${here}/build/system-contracts.json`)

const CONTRACTS = {
  deposit: '0x00000000219ab540356cbb839cbe05303d7705fa',
  beacon_roots: '0x000f3df6d732807ef1319fb7b8bb8522d0beac02', // EIP-4788
  withdrawal_requests: '0x00000961ef480eb55e80d19ad83579a64c007002', // EIP-7002
  consolidation_requests: '0x0000bbddc7ce488642fb579f8b00f3a590007251', // EIP-7251
}
// Slot 0 of the request contracts holds 2^256-1 in genesis ("not yet activated");
// a real chain clears it in its first block, anvil never does, and the fee call
// would then revert. Leaving it out gives the real post-fork state (fee = 1 wei).
const SKIP_SLOT_ZERO = new Set([CONTRACTS.withdrawal_requests, CONTRACTS.consolidation_requests])
const ZERO_SLOT = '0x' + '00'.repeat(32)

const result = {}
for (const [name, address] of Object.entries(CONTRACTS)) {
  const entry = hoodiGenesis[address]
  if (!Array.isArray(entry)) throw new Error(`${name} (${address}) missing from the Hoodi genesis`)
  const [, code, storage, nonce] = entry
  const slots = {}
  for (const [slot, value] of storage ?? []) {
    if (SKIP_SLOT_ZERO.has(address) && BigInt(slot) === BigInt(ZERO_SLOT)) continue
    slots['0x' + BigInt(slot).toString(16).padStart(64, '0')] =
      '0x' + BigInt(value).toString(16).padStart(64, '0')
  }
  result[name] = { address, code, nonce: nonce ?? '0x0', storage: slots }
}

mkdirSync(dirname(out), { recursive: true })
writeFileSync(out, JSON.stringify(result, null, 2) + '\n')
console.log(`wrote ${Object.keys(result).length} contracts to ${out}`)
