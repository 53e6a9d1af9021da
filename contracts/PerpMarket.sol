// SPDX-License-Identifier: MIT
pragma solidity 0.8.27;

/// @title PerpMarket
/// @notice Devnet stand-in for a Synthetix-PerpsV2-style market: only the funding read the agent
/// uses. No package ships a perp market with `currentFundingRate()`, so this is ours.
/// Funding is an 18-decimal fraction per day (as PerpsV2 reports it):
///     rate = clamp(skew / skewScale, -1, 1) * maxFundingRatePerDay
/// Positive skew (net long) gives a positive rate.
contract PerpMarket {
    int256 private constant WAD = 1e18;

    bytes32 public immutable marketKey;
    bytes32 public immutable baseAsset;
    address public owner;

    /// Net open interest in base units (18 decimals); set by the owner to script scenarios.
    int256 public marketSkew;
    /// Skew (18 decimals) at which funding reaches its maximum.
    int256 public skewScale;
    /// Maximum funding per day, 18-decimal fraction (e.g. 0.1e18 = 10%/day).
    int256 public maxFundingRatePerDay;

    event SkewUpdated(int256 skew, int256 fundingRate);
    event ParametersUpdated(int256 skewScale, int256 maxFundingRatePerDay);
    event OwnerChanged(address owner);

    error NotOwner();
    error BadParameter();

    modifier onlyOwner() {
        if (msg.sender != owner) revert NotOwner();
        _;
    }

    constructor(bytes32 marketKey_, bytes32 baseAsset_, int256 skewScale_, int256 maxFundingRatePerDay_) {
        if (skewScale_ <= 0 || maxFundingRatePerDay_ < 0) revert BadParameter();
        marketKey = marketKey_;
        baseAsset = baseAsset_;
        owner = msg.sender;
        skewScale = skewScale_;
        maxFundingRatePerDay = maxFundingRatePerDay_;
    }

    function currentFundingRate() public view returns (int256) {
        int256 proportional = (marketSkew * WAD) / skewScale;
        if (proportional > WAD) proportional = WAD;
        if (proportional < -WAD) proportional = -WAD;
        return (proportional * maxFundingRatePerDay) / WAD;
    }

    /// Funding per hour, for convenience (PerpsV2 readers divide the daily rate by 24).
    function currentFundingRatePerHour() external view returns (int256) {
        return currentFundingRate() / 24;
    }

    function setSkew(int256 skew) external onlyOwner {
        marketSkew = skew;
        emit SkewUpdated(skew, currentFundingRate());
    }

    function setParameters(int256 skewScale_, int256 maxFundingRatePerDay_) external onlyOwner {
        if (skewScale_ <= 0 || maxFundingRatePerDay_ < 0) revert BadParameter();
        skewScale = skewScale_;
        maxFundingRatePerDay = maxFundingRatePerDay_;
        emit ParametersUpdated(skewScale_, maxFundingRatePerDay_);
    }

    function transferOwnership(address newOwner) external onlyOwner {
        owner = newOwner;
        emit OwnerChanged(newOwner);
    }
}
