// The policy pack: `pulumi preview --policy-pack policy` (and `up`). The rules are in ./policies.ts.
import { PolicyPack } from "@pulumi/policy";
import { POLICIES } from "./policies";

new PolicyPack("ispmail", { policies: POLICIES });
