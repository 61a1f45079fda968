// The same normalised tables as provenant_indexer's schema, as Ponder tables.
import { onchainTable } from "ponder";

export const datanet = onchainTable("datanet", (t) => ({
  id: t.bigint().primaryKey(),
  owner: t.hex().notNull(),
  metadataCid: t.text().notNull(),
  license: t.text().notNull(),
  treasury: t.hex().notNull(),
  stake: t.bigint().notNull(),
  allowlisted: t.boolean().notNull(),
  slashOnReject: t.boolean().notNull(),
  version: t.bigint().notNull(),
}));

export const curatorChange = onchainTable("curator_change", (t) => ({
  id: t.text().primaryKey(),
  datanetId: t.bigint().notNull(),
  account: t.hex().notNull(),
  enabled: t.boolean().notNull(),
}));

export const contribution = onchainTable("contribution", (t) => ({
  id: t.bigint().primaryKey(),
  datanetId: t.bigint().notNull(),
  contributor: t.hex().notNull(),
  contentHash: t.hex().notNull(),
  cid: t.text().notNull(),
  size: t.bigint().notNull(),
  rowCount: t.integer().notNull(),
  stake: t.bigint().notNull(),
  status: t.text().notNull(),
  blockNumber: t.bigint().notNull(),
}));

export const contributionStatus = onchainTable("contribution_status", (t) => ({
  id: t.text().primaryKey(),
  contributionId: t.bigint().notNull(),
  status: t.text().notNull(),
  actor: t.hex(),
  reason: t.integer(),
}));

export const reputation = onchainTable("reputation", (t) => ({
  account: t.hex().primaryKey(),
  submitted: t.integer().notNull(),
  approved: t.integer().notNull(),
  rejected: t.integer().notNull(),
  withdrawn: t.integer().notNull(),
}));

export const model = onchainTable("model", (t) => ({
  id: t.bigint().primaryKey(),
  owner: t.hex().notNull(),
  name: t.text().notNull(),
  parentId: t.bigint().notNull(),
  lineageRoot: t.hex().notNull(),
  adapterHash: t.hex().notNull(),
  baseModel: t.text(),
  adapterCid: t.text(),
  pricePerCall: t.bigint(),
  server: t.hex(),
}));

export const modelContribution = onchainTable("model_contribution", (t) => ({
  id: t.text().primaryKey(),
  modelId: t.bigint().notNull(),
  contributionId: t.bigint().notNull(),
}));

export const escrowMovement = onchainTable("escrow_movement", (t) => ({
  id: t.text().primaryKey(),
  modelId: t.bigint().notNull(),
  consumer: t.hex().notNull(),
  kind: t.text().notNull(),
  amount: t.bigint().notNull(),
}));

export const charge = onchainTable("charge", (t) => ({
  id: t.text().primaryKey(),
  modelId: t.bigint().notNull(),
  consumer: t.hex().notNull(),
  seq: t.bigint().notNull(),
  amount: t.bigint().notNull(),
  cumulativeAmount: t.bigint().notNull(),
}));

export const feePayment = onchainTable("fee_payment", (t) => ({
  id: t.text().primaryKey(),
  modelId: t.bigint().notNull(),
  payer: t.hex().notNull(),
  seq: t.bigint().notNull(),
  amount: t.bigint().notNull(),
}));

export const feeRelease = onchainTable("fee_release", (t) => ({
  id: t.text().primaryKey(),
  modelId: t.bigint().notNull(),
  fromSeq: t.bigint().notNull(),
  toSeq: t.bigint().notNull(),
  amount: t.bigint().notNull(),
}));

export const epoch = onchainTable("epoch", (t) => ({
  id: t.text().primaryKey(),
  modelId: t.bigint().notNull(),
  epoch: t.bigint().notNull(),
  uptoSeq: t.bigint().notNull(),
  payoutRoot: t.hex().notNull(),
  claimCap: t.bigint().notNull(),
  resultsCid: t.text().notNull(),
  feeTotal: t.bigint(),
  protocolAmount: t.bigint(),
  ownerAmount: t.bigint(),
  carriedDust: t.bigint(),
}));

export const claim = onchainTable("claim", (t) => ({
  id: t.text().primaryKey(),
  modelId: t.bigint().notNull(),
  epoch: t.bigint().notNull(),
  account: t.hex().notNull(),
  amount: t.bigint().notNull(),
}));

// Every other event (token transfers and approvals, role grants, versions): one row each, as
// our indexer's raw `events` table holds every log.
export const otherEvent = onchainTable("other_event", (t) => ({
  id: t.text().primaryKey(),
  contract: t.text().notNull(),
  name: t.text().notNull(),
  blockNumber: t.bigint().notNull(),
}));
