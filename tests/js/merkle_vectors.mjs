// Reference values from @openzeppelin/merkle-tree for tests/test_merkle.py.
// usage: node tests/js/merkle_vectors.mjs INPUT.json...
// INPUT: {"types": [...], "values": [[...], ...], "multi": [[valueIndex, ...], ...]}
//   (values as the JS library takes them: decimal strings for integers, 0x-hex for bytes)
// prints, per input, one JSON line: {"root", "proofs": [one per value, in input order],
// "multi": [getMultiProof per index list], "dump"}.
import { readFileSync } from 'node:fs'
import { StandardMerkleTree } from '@openzeppelin/merkle-tree'

for (const file of process.argv.slice(2)) {
  const input = JSON.parse(readFileSync(file, 'utf8'))
  const tree = StandardMerkleTree.of(input.values, input.types)
  console.log(JSON.stringify({
    root: tree.root,
    proofs: input.values.map((_, i) => tree.getProof(i)),
    multi: (input.multi ?? []).map(indices => tree.getMultiProof(indices)),
    dump: tree.dump(),
  }))
}
