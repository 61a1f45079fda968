// Second implementation of our CIDs, for test vectors: the UnixFS importer Helia uses.
// usage: node tests/js/cid_vectors.mjs [--chunk-size N] [--max-links N] FILE...
// prints one JSON line per file: {"file", "cid", "blocks"} (blocks: distinct blocks stored).
// With no options it runs at the importer's defaults, which are kubo's: 262144-byte fixed
// chunks and a balanced layout of at most 174 links; we only ask for CIDv1 and raw leaves.
import { readFile } from 'node:fs/promises'
import { importer } from 'ipfs-unixfs-importer'
import { fixedSize } from 'ipfs-unixfs-importer/chunker'
import { balanced } from 'ipfs-unixfs-importer/layout'
import { MemoryBlockstore } from 'blockstore-core/memory'

const args = process.argv.slice(2)
const options = { cidVersion: 1, rawLeaves: true }
const files = []
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--chunk-size') options.chunker = fixedSize({ chunkSize: Number(args[++i]) })
  else if (args[i] === '--max-links') options.layout = balanced({ maxChildrenPerNode: Number(args[++i]) })
  else files.push(args[i])
}
if (files.length === 0) {
  console.error('usage: node cid_vectors.mjs [--chunk-size N] [--max-links N] FILE...')
  process.exit(2)
}
for (const file of files) {
  const content = await readFile(file)
  const blockstore = new MemoryBlockstore()
  let last
  for await (const entry of importer([{ content }], blockstore, options)) last = entry
  console.log(JSON.stringify({ file, cid: last.cid.toString(), blocks: blockstore.data.size }))
}
