// Reference Solana stake instructions, from @solana-program/stake@0.9.1 (the current
// interface: no sysvar accounts) and @solana/web3.js 1.x StakeProgram (the account lists
// every Stake program accepts, sysvars included). Input: JSON on stdin
// {vault, stake, vote, lamports}; output: JSON of each instruction's data (hex) and accounts.
import { createRequire } from "node:module";
import { readFileSync } from "node:fs";

const require = createRequire(process.env.CUSTOS_NODE_MODULES + "/");
const stake = require("@solana-program/stake");
const web3 = require("@solana/web3.js");
const { address, createNoopSigner } = require("@solana/kit");

const input = JSON.parse(readFileSync(0, "utf8"));
const hex = (bytes) => Buffer.from(bytes).toString("hex");

// kit instructions: accounts carry a role (0 readonly, 1 writable, 2 readonly signer, 3 writable signer)
function kit(ix) {
  return {
    program: ix.programAddress,
    data: hex(ix.data),
    accounts: ix.accounts.map((a) => [a.address, a.role >= 2, a.role % 2 === 1]),
  };
}
function legacy(ix) {
  return {
    program: ix.programId.toBase58(),
    data: hex(ix.data),
    accounts: ix.keys.map((k) => [k.pubkey.toBase58(), k.isSigner, k.isWritable]),
  };
}

const authority = createNoopSigner(address(input.vault));
const lockup = { unixTimestamp: 0n, epoch: 0n, custodian: "11111111111111111111111111111111" };
const out = {
  kit: {
    initialize: kit(
      stake.getInitializeInstruction({
        stake: input.stake,
        arg0: { staker: input.vault, withdrawer: input.vault },
        arg1: lockup,
      }),
    ),
    delegate: kit(
      stake.getDelegateStakeInstruction({ stake: input.stake, vote: input.vote, stakeAuthority: authority }),
    ),
    deactivate: kit(stake.getDeactivateInstruction({ stake: input.stake, stakeAuthority: authority })),
    withdraw: kit(
      stake.getWithdrawInstruction({
        stake: input.stake,
        recipient: input.vault,
        withdrawAuthority: authority,
        args: BigInt(input.lamports),
      }),
    ),
  },
};
const vault = new web3.PublicKey(input.vault);
const account = new web3.PublicKey(input.stake);
const only = (tx) => tx.instructions[tx.instructions.length - 1];
out.web3 = {
  initialize: legacy(
    web3.StakeProgram.initialize({
      stakePubkey: account,
      authorized: new web3.Authorized(vault, vault),
      lockup: new web3.Lockup(0, 0, web3.PublicKey.default),
    }),
  ),
  delegate: legacy(
    only(web3.StakeProgram.delegate({ stakePubkey: account, authorizedPubkey: vault, votePubkey: new web3.PublicKey(input.vote) })),
  ),
  deactivate: legacy(only(web3.StakeProgram.deactivate({ stakePubkey: account, authorizedPubkey: vault }))),
  withdraw: legacy(
    only(
      web3.StakeProgram.withdraw({
        stakePubkey: account,
        authorizedPubkey: vault,
        toPubkey: vault,
        lamports: Number(input.lamports),
      }),
    ),
  ),
};
process.stdout.write(JSON.stringify(out));
