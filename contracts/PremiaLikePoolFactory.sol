// SPDX-License-Identifier: MIT
pragma solidity 0.8.27;

import {PoolKey, PremiaLikePutPool} from "./PremiaLikePutPool.sol";

interface IAggregatorLike {
    function decimals() external view returns (uint8);
    function latestRoundData()
        external
        view
        returns (uint80 roundId, int256 answer, uint256 startedAt, uint256 updatedAt, uint80 answeredInRound);
}

interface IERC20Min {
    function transfer(address to, uint256 amount) external returns (bool);
    function transferFrom(address from, address to, uint256 amount) external returns (bool);
    function balanceOf(address account) external view returns (uint256);
}

/// @title PremiaLikeOracleAdapter
/// @notice The `IOracleAdapter.getPrice(tokenIn, tokenOut)` subset of Premia's ChainlinkAdapter:
/// price of `tokenIn` in `tokenOut`, 18 decimals, from each token's Chainlink USD feed.
contract PremiaLikeOracleAdapter {
    address public owner;
    mapping(address => address) public usdFeed;

    error OracleAdapter__PairNotSupported(address tokenA, address tokenB);
    error OracleAdapter__InvalidPrice(int256 price);
    error PremiaLike__NotOwner();

    constructor() {
        owner = msg.sender;
    }

    function setFeed(address token, address feed) external {
        if (msg.sender != owner) revert PremiaLike__NotOwner();
        usdFeed[token] = feed;
    }

    function isPairSupported(address tokenA, address tokenB) external view returns (bool, bool) {
        bool ok = usdFeed[tokenA] != address(0) && usdFeed[tokenB] != address(0);
        return (ok, false);
    }

    function _usd(address token) internal view returns (uint256) {
        IAggregatorLike feed = IAggregatorLike(usdFeed[token]);
        (, int256 answer,,,) = feed.latestRoundData();
        if (answer <= 0) revert OracleAdapter__InvalidPrice(answer);
        return uint256(answer) * 10 ** (18 - uint256(feed.decimals()));
    }

    function getPrice(address tokenIn, address tokenOut) public view returns (uint256) {
        if (usdFeed[tokenIn] == address(0) || usdFeed[tokenOut] == address(0)) {
            revert OracleAdapter__PairNotSupported(tokenIn, tokenOut);
        }
        return (_usd(tokenIn) * 1e18) / _usd(tokenOut);
    }
}

/// @title PremiaLikeERC20Router
/// @notice Premia v3's ERC20Router: the one contract takers approve; only pools the factory
/// deployed may pull tokens through it (`ERC20Router__NotAuthorized` otherwise).
contract PremiaLikeERC20Router {
    PremiaLikePoolFactory public immutable FACTORY;

    error ERC20Router__NotAuthorized();
    error PremiaLike__TransferFailed();

    constructor(address factory_) {
        FACTORY = PremiaLikePoolFactory(factory_);
    }

    function safeTransferFrom(address token, address from, address to, uint256 amount) external {
        if (!FACTORY.isPool(msg.sender)) revert ERC20Router__NotAuthorized();
        if (!IERC20Min(token).transferFrom(from, to, amount)) revert PremiaLike__TransferFailed();
    }
}

/// @title PremiaLikePoolFactory
/// @notice Devnet stand-in for Premia v3's PoolFactory: `getPoolAddress`/`deployPool`/`isPool`/
/// `initializationFee` with the same selectors, PoolKey tuple and custom errors as the Premia v3 ABI package's
/// IPoolFactory, including `_revertIfOptionMaturityInvalid` and `_revertIfOptionStrikeInvalid`.
/// Pools are EIP-1167 clones of one PremiaLikePutPool at CREATE2 addresses (salt = key hash), so
/// `getPoolAddress` knows a pool's address before it is deployed, as Premia's does.
/// The factory is also the devnet's single underwriter: it holds quote tokens and locks each sold
/// put's collateral into the pool (`lockCollateral`), and its owner sets the implied volatility.
contract PremiaLikePoolFactory {
    address public immutable implementation;
    PremiaLikeERC20Router public immutable router;
    address public owner;
    /// Implied volatility (annualised, 18 decimals) every pool prices with.
    uint256 public volatility;

    mapping(bytes32 => address) internal pools;
    mapping(address => bool) public isPool;

    event PoolDeployed(
        address indexed base,
        address indexed quote,
        address oracleAdapter,
        uint256 strike,
        uint256 maturity,
        bool isCallPool,
        address poolAddress
    );
    event VolatilityUpdated(uint256 volatility);

    error PoolFactory__IdenticalAddresses();
    error PoolFactory__OptionExpired(uint256 maturity);
    error PoolFactory__OptionMaturityExceedsMax(uint256 maturity);
    error PoolFactory__OptionMaturityNot8UTC(uint256 maturity);
    error PoolFactory__OptionMaturityNotFriday(uint256 maturity);
    error PoolFactory__OptionMaturityNotLastFriday(uint256 maturity);
    error PoolFactory__OptionStrikeEqualsZero();
    error PoolFactory__OptionStrikeInvalid(uint256 strike, uint256 strikeInterval);
    error PoolFactory__PoolAlreadyDeployed(address poolAddress);
    error PoolFactory__ZeroAddress();
    error Pool__InsufficientLiquidity();
    error PremiaLike__NotOwner();
    error PremiaLike__NotPool();
    error PremiaLike__CallPoolsNotSupported();

    constructor(address implementation_, uint256 volatility_) {
        implementation = implementation_;
        router = new PremiaLikeERC20Router(address(this));
        owner = msg.sender;
        volatility = volatility_;
    }

    function setVolatility(uint256 volatility_) external {
        if (msg.sender != owner) revert PremiaLike__NotOwner();
        volatility = volatility_;
        emit VolatilityUpdated(volatility_);
    }

    // -- IPoolFactory -------------------------------------------------------------------------

    function initializationFee(PoolKey calldata) external pure returns (uint256) {
        return 0;
    }

    function getPoolAddress(PoolKey calldata k) external view returns (address pool, bool isDeployed) {
        bytes32 salt = keccak256(abi.encode(k));
        pool = pools[salt];
        if (pool != address(0)) return (pool, true);
        return (_predict(salt), false);
    }

    function deployPool(PoolKey calldata k) external payable returns (address poolAddress) {
        return _deploy(k);
    }

    /// Devnet helper: deploy many pools in one transaction, skipping those already deployed.
    function deployPools(PoolKey[] calldata keys) external {
        for (uint256 i = 0; i < keys.length; i++) {
            if (pools[keccak256(abi.encode(keys[i]))] == address(0)) _deploy(keys[i]);
        }
    }

    function _deploy(PoolKey calldata k) internal returns (address poolAddress) {
        if (k.base == address(0) || k.quote == address(0) || k.oracleAdapter == address(0)) {
            revert PoolFactory__ZeroAddress();
        }
        if (k.base == k.quote) revert PoolFactory__IdenticalAddresses();
        if (k.isCallPool) revert PremiaLike__CallPoolsNotSupported();
        _revertIfOptionStrikeInvalid(k.strike);
        _revertIfOptionMaturityInvalid(k.maturity);
        bytes32 salt = keccak256(abi.encode(k));
        if (pools[salt] != address(0)) revert PoolFactory__PoolAlreadyDeployed(pools[salt]);
        poolAddress = _clone(salt);
        pools[salt] = poolAddress;
        isPool[poolAddress] = true;
        PremiaLikePutPool(poolAddress).initialize(k, address(router));
        emit PoolDeployed(k.base, k.quote, k.oracleAdapter, k.strike, k.maturity, k.isCallPool, poolAddress);
    }

    // -- underwriting -------------------------------------------------------------------------

    /// A pool locks `amount` of the factory's `token` as collateral for options it sells.
    function lockCollateral(address token, uint256 amount, address to) external {
        if (!isPool[msg.sender] || to != msg.sender) revert PremiaLike__NotPool();
        if (IERC20Min(token).balanceOf(address(this)) < amount) revert Pool__InsufficientLiquidity();
        IERC20Min(token).transfer(to, amount);
    }

    // -- Premia's validation (PoolFactory / OptionMath) ----------------------------------------

    /// OptionMath.calculateStrikeInterval: 10^(floor(log10 strike) - 1), times 5 when the strike's
    /// leading digit is >= 5 (on the 18-decimal integer, as Premia does).
    function strikeInterval(uint256 strike) public pure returns (uint256) {
        uint256 exponent = 0;
        uint256 v = strike;
        while (v >= 10) {
            v /= 10;
            exponent++;
        }
        uint256 multiplier = strike >= 5 * 10 ** exponent ? 5 : 1;
        return multiplier * 10 ** (exponent - 1);
    }

    function _revertIfOptionStrikeInvalid(uint256 strike) internal pure {
        if (strike == 0) revert PoolFactory__OptionStrikeEqualsZero();
        uint256 interval = strikeInterval(strike);
        if (strike % interval != 0) revert PoolFactory__OptionStrikeInvalid(strike, interval);
    }

    function _revertIfOptionMaturityInvalid(uint256 maturity) internal view {
        if (maturity <= block.timestamp) revert PoolFactory__OptionExpired(maturity);
        if (maturity % 1 days != 8 hours) revert PoolFactory__OptionMaturityNot8UTC(maturity);
        uint256 ttm = maturity - block.timestamp;
        if (ttm >= 3 days && ttm <= 30 days) {
            if (!_isFriday(maturity)) revert PoolFactory__OptionMaturityNotFriday(maturity);
        }
        if (ttm > 30 days) {
            if (!_isLastFriday(maturity)) revert PoolFactory__OptionMaturityNotLastFriday(maturity);
        }
        if (ttm > 365 days) revert PoolFactory__OptionMaturityExceedsMax(maturity);
    }

    function _isFriday(uint256 ts) internal pure returns (bool) {
        // 1970-01-01 was a Thursday: day 0 -> Thursday, day 1 -> Friday.
        return (ts / 1 days) % 7 == 1;
    }

    function _isLastFriday(uint256 ts) internal pure returns (bool) {
        (uint256 year, uint256 month, uint256 day) = _date(ts / 1 days);
        if (_daysInMonth(year, month) - day >= 7) return false;
        return _isFriday(ts);
    }

    /// Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    function _date(uint256 z) internal pure returns (uint256 y, uint256 m, uint256 d) {
        uint256 zz = z + 719468;
        uint256 era = zz / 146097;
        uint256 doe = zz - era * 146097;
        uint256 yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
        y = yoe + era * 400;
        uint256 doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        uint256 mp = (5 * doy + 2) / 153;
        d = doy - (153 * mp + 2) / 5 + 1;
        m = mp < 10 ? mp + 3 : mp - 9;
        if (m <= 2) y += 1;
    }

    function _daysInMonth(uint256 year, uint256 month) internal pure returns (uint256) {
        if (month == 2) {
            bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
            return leap ? 29 : 28;
        }
        if (month == 4 || month == 6 || month == 9 || month == 11) return 30;
        return 31;
    }

    // -- EIP-1167 clones ----------------------------------------------------------------------

    function _cloneCode() internal view returns (bytes memory) {
        return abi.encodePacked(
            hex"3d602d80600a3d3981f3363d3d373d3d3d363d73", implementation, hex"5af43d82803e903d91602b57fd5bf3"
        );
    }

    function _clone(bytes32 salt) internal returns (address pool) {
        bytes memory code = _cloneCode();
        assembly {
            pool := create2(0, add(code, 0x20), mload(code), salt)
        }
        if (pool == address(0)) revert PoolFactory__ZeroAddress();
    }

    function _predict(bytes32 salt) internal view returns (address) {
        bytes32 h = keccak256(abi.encodePacked(bytes1(0xff), address(this), salt, keccak256(_cloneCode())));
        return address(uint160(uint256(h)));
    }
}
