// SPDX-License-Identifier: MIT
pragma solidity ^0.8.0;

// Pulls Chainlink's MockV3Aggregator (a feed with updateAnswer/updateRoundData that set
// updatedAt) into the forge build; the devnet deploys it from out/forge/MockV3Aggregator.sol/.
import {MockV3Aggregator} from "@chainlink/contracts/src/v0.8/tests/MockV3Aggregator.sol";

/// Marker so this file yields an artifact (forge warns about files without one).
abstract contract DevnetFeeds {}
